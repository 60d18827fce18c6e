"""Check ``SHA256SUMS.sig`` against a trusted GPG key fingerprint.

The key must already be in the caller's keyring (``$GNUPGHOME`` or
``~/.gnupg``); trust is the configured fingerprint, not the keyring's trust
database: a good signature by any other key is refused.

gpg exits 0 for a good signature by an expired or revoked key, so its exit
code is not the verdict: like apt's gpgv method, the ``--status-fd`` lines
are.  A signature counts only with GOODSIG and VALIDSIG by the trusted key
and none of the status words that mark a bad, expired or unverifiable one.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from undercloud_appliance.errors import ApplianceError, ChecksumError

TRUSTED_KEY_ENV = "UNDERCLOUD_APPLIANCE_TRUSTED_KEY"
FINGERPRINT_PATTERN = re.compile(r"^[0-9A-F]{40}([0-9A-F]{24})?$")
SIGNATURE_LIMIT = 64 * 1024

#: Status words that refuse the whole signature file, whatever else it holds
#: (what they mean: doc/DETAILS in GnuPG's sources).
REFUSING_STATUS = {
    "BADSIG": "a bad signature",
    "ERRSIG": "a signature gpg cannot check",
    "EXPSIG": "an expired signature",
    "EXPKEYSIG": "a signature by an expired key",
    "REVKEYSIG": "a signature by a revoked key",
    "NO_PUBKEY": "a signature by a key not in the keyring",
}


def normalise_fingerprint(value: str) -> str:
    fingerprint = value.replace(" ", "").upper().removeprefix("0X")
    if not FINGERPRINT_PATTERN.fullmatch(fingerprint):
        raise ApplianceError(f"trusted key {value!r}: expected a full 40-hex-digit GPG fingerprint")
    return fingerprint


def configured_fingerprint(option: str | None) -> str | None:
    value = option or os.environ.get(TRUSTED_KEY_ENV)
    return normalise_fingerprint(value) if value else None


def signing_fingerprints(status_output: str) -> set[str]:
    """Fingerprints (signing key and its primary key) of VALIDSIG status lines."""
    fingerprints: set[str] = set()
    for line in status_output.splitlines():
        fields = line.split()
        if fields[:2] == ["[GNUPG:]", "VALIDSIG"] and len(fields) >= 3:
            fingerprints.add(fields[2].upper())
            if len(fields) >= 12:
                fingerprints.add(fields[-1].upper())
    return fingerprints


def signature_problem(status_output: str, fingerprint: str) -> str | None:
    """Why gpg's status lines do not show a good signature by ``fingerprint``; None if they do."""
    words = [
        fields[1]
        for fields in (line.split() for line in status_output.splitlines())
        if len(fields) >= 2 and fields[0] == "[GNUPG:]"
    ]
    for word, meaning in REFUSING_STATUS.items():
        if word in words:
            return f"{meaning} ({word})"
    if "GOODSIG" not in words or fingerprint not in signing_fingerprints(status_output):
        return f"no good signature by trusted key {fingerprint}"
    return None


def verify_detached_signature(data: bytes, signature: bytes, fingerprint: str, what: str) -> None:
    """Raise ChecksumError unless ``signature`` is a good signature by ``fingerprint``."""
    with tempfile.TemporaryDirectory(prefix="undercloud-appliance-gpg-") as workdir:
        data_path = Path(workdir) / "data"
        signature_path = Path(workdir) / "data.sig"
        data_path.write_bytes(data)
        signature_path.write_bytes(signature)
        try:
            result = subprocess.run(
                [
                    "gpg",
                    "--batch",
                    "--no-tty",
                    "--status-fd",
                    "1",
                    "--verify",
                    str(signature_path),
                    str(data_path),
                ],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=60,
                check=False,
            )
        except FileNotFoundError:
            raise ApplianceError("gpg is not installed: cannot check the signature") from None
    problem = signature_problem(result.stdout, fingerprint)
    if problem is None and result.returncode != 0:
        problem = f"gpg --verify exited {result.returncode}"
    if problem is not None:
        raise ChecksumError(
            f"{what}: not a valid signature by trusted key {fingerprint}: {problem}"
        )
