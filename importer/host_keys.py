"""An appliance's ssh host keys: made on this host, written into its disk, pinned.

The build seals its image without host keys.  The importer makes the
appliance's host key pairs here with ssh-keygen (once per appliance, in
``<state dir>/host-keys``), the customisation writes them into the guest's
``/etc/ssh`` before its first boot, and every import writes ``known_hosts``
from their public halves before it first connects: ssh runs with
``StrictHostKeyChecking yes`` and never trusts a key on first use.

The pairs are kept like the appliance's client key pair (``destroy`` and
``--replace`` keep them): the customised layer that holds them is reused,
and the appliance keeps its host identity across re-imports.  All three
types sshd offers by default are made, so the image's boot-time
``ssh-keygen -A`` (elements/appliance-boot) finds none missing; that also
spares the first boot an RSA key generation (about 40 s under TCG).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.manifest import write_file_atomically

HOST_KEYS_DIR_NAME = "host-keys"
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")


@dataclass(frozen=True)
class HostKey:
    """One host key pair on this host and where sshd finds it in the guest."""

    key_type: str
    private: Path

    @property
    def public(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")

    @property
    def guest_private_path(self) -> str:
        return f"/etc/ssh/{self.private.name}"

    @property
    def guest_public_path(self) -> str:
        return f"{self.guest_private_path}.pub"

    def public_key(self) -> str:
        """``<algorithm> <base64>``: the public key without its comment."""
        fields = self.public.read_text().split()
        if len(fields) < 2:
            raise ApplianceError(f"host key {self.public}: not an OpenSSH public key")
        return f"{fields[0]} {fields[1]}"


def host_keys_dir(state_dir: Path) -> Path:
    return state_dir / HOST_KEYS_DIR_NAME


def _host_key(state_dir: Path, key_type: str) -> HostKey:
    # The guest's file names, so an upload needs no renaming.
    return HostKey(key_type, host_keys_dir(state_dir) / f"ssh_host_{key_type}_key")


def recorded_host_keys(state_dir: Path) -> list[HostKey] | None:
    """The appliance's host keys if all of them exist (None: not made, or made only in part)."""
    keys = [_host_key(state_dir, key_type) for key_type in HOST_KEY_TYPES]
    if all(key.private.is_file() and key.public.is_file() for key in keys):
        return keys
    return None


def appliance_host_keys(state_dir: Path) -> list[HostKey]:
    """The appliance's host key pairs, made here (all of them) unless they all exist."""
    existing = recorded_host_keys(state_dir)
    if existing is not None:
        return existing
    directory = host_keys_dir(state_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    keys = [_host_key(state_dir, key_type) for key_type in HOST_KEY_TYPES]
    for key in keys:
        # A pair made in part (an interrupted run) is made again: ssh-keygen never overwrites.
        key.private.unlink(missing_ok=True)
        key.public.unlink(missing_ok=True)
        try:
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    key.key_type,
                    "-N",
                    "",
                    "-C",
                    "",
                    "-f",
                    str(key.private),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
        except FileNotFoundError:
            raise ApplianceError("ssh-keygen is not installed (Debian: openssh-client)") from None
        except subprocess.CalledProcessError as error:
            detail = (error.stderr or "").strip().splitlines()[-1:] or [f"exit {error.returncode}"]
            raise ApplianceError(f"cannot make host key {key.private}: {detail[0]}") from None
    return keys


def known_hosts_pattern(host: str, port: int) -> str:
    """The host as ssh looks it up in known_hosts for ``HostName host`` and ``Port port``."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_text(host: str, port: int, keys: list[HostKey]) -> str:
    pattern = known_hosts_pattern(host, port)
    return "".join(f"{pattern} {key.public_key()}\n" for key in keys)


def write_known_hosts(path: Path, host: str, port: int, keys: list[HostKey]) -> None:
    """Pin ``keys`` for the appliance's address in ``path`` (replacing what it held)."""
    write_file_atomically(path, known_hosts_text(host, port, keys).encode(), mode=0o600)
