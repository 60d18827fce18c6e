"""GPG signing keys that tests make in a GNUPGHOME of their own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def gnupg_env(home: Path) -> dict[str, str]:
    return {**os.environ, "GNUPGHOME": str(home)}


def make_signing_key(home: Path, user_id: str, expires: str = "1d") -> str:
    """Make an ed25519 signing key without passphrase in ``home``; return its fingerprint."""
    env = gnupg_env(home)
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--passphrase",
            "",
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
