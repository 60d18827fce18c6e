"""GPG signing keys that tests make in a GNUPGHOME of their own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def gnupg_env(home: Path) -> dict[str, str]:
    return {**os.environ, "GNUPGHOME": str(home)}


def make_signing_key(
    home: Path, user_id: str, expires: str = "1d", made_at: str | None = None
) -> str:
    """Make an ed25519 signing key without passphrase in ``home``; return its fingerprint.

    ``made_at`` (gpg's ``--faked-system-time``) backdates it.
    """
    env = gnupg_env(home)
    backdate = ["--faked-system-time", made_at] if made_at else []
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--passphrase",
            "",
            *backdate,
            "--quick-generate-key",
            user_id,
            "ed25519",
            "sign",
            expires,
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys", user_id],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))


def stop_gpg_agent(home: Path) -> None:
    """Stop the agent gpg started for ``home`` (it outlives the test otherwise)."""
    subprocess.run(["gpgconf", "--kill", "all"], env=gnupg_env(home), check=False)


def sign_detached(home: Path, path: Path, key: str, at: str | None = None) -> Path:
    """Write ``path``.sig, a detached signature by ``key`` (made at time ``at``, if given:
    gpg's ``--faked-system-time`` form, e.g. ``20200101T010000``)."""
    faked = ["--faked-system-time", f"{at}!"] if at else []
    signature = path.with_name(path.name + ".sig")
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--yes",
            *faked,
            "--local-user",
            key,
            "--detach-sign",
            "--output",
            str(signature),
            str(path),
        ],
        check=True,
        capture_output=True,
        env=gnupg_env(home),
        timeout=60,
    )
    return signature


def make_expired_signing_key(home: Path, user_id: str) -> tuple[str, str]:
    """A key that was made in 2020 and expired a day later: (fingerprint, a time
    within its life to sign at)."""
    return make_signing_key(home, user_id, "1d", made_at="20200101T000000!"), "20200101T010000"


def revoke_key(home: Path, fingerprint: str) -> None:
    """Import the revocation certificate gpg made with the key: the key is revoked."""
    certificate = (home / "openpgp-revocs.d" / f"{fingerprint}.rev").read_text()
    # gpg stores it with a ':' before the armour line so it is not imported by mistake.
    subprocess.run(
        ["gpg", "--batch", "--import"],
        input=certificate.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK", "-----BEGIN PGP PUBLIC KEY BLOCK"
        ),
        check=True,
        capture_output=True,
        text=True,
        env=gnupg_env(home),
        timeout=60,
    )
