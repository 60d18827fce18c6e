"""Detached GPG signatures of SHA256SUMS (``gpg``, the user's keyring).

``GNUPGHOME`` selects the keyring as usual; the key must be usable without
a prompt (gpg-agent with a cached passphrase, or no passphrase).
"""

from __future__ import annotations

import shutil
import subprocess

from undercloud_appliance.errors import ApplianceError


def sign_detached(content: bytes, key_id: str) -> bytes:
    """A binary detached signature of ``content`` by ``key_id``."""
    if shutil.which("gpg") is None:
        raise ApplianceError("gpg: not installed; cannot use --sign-key")
    result = subprocess.run(
        [
            "gpg",
            "--batch",
            "--no-tty",
            "--yes",
            "--local-user",
            key_id,
            "--detach-sign",
            "--output",
            "-",
        ],
        input=content,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        cause = lines[-1] if lines else f"exit code {result.returncode}"
        raise ApplianceError(f"gpg: cannot sign with key {key_id!r}: {cause}")
    return result.stdout
