"""The bake stage: boot the built disk once and finish the install in it.

Some undercloud install steps need a running system (services, databases)
that a DIB chroot cannot give.  The built disk is booted under qemu (KVM
where it works, TCG otherwise) with a throwaway ssh key, the profile's
``boot_install_commands`` run over ssh as the appliance user, then its
``smoke_commands``; the guest is shut down cleanly and the disk is sealed
again with libguestfs (builders.disk.seal_mounted_os).
"""

from __future__ import annotations

import datetime
import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builders.qemu_boot import BootedGuest, booted
from undercloud_appliance.errors import BuildError
from undercloud_appliance.retry_policies import poll_until

log = logging.getLogger(__name__)

OUTPUT_TAIL_CHARS = 2000
COMMAND_TIMEOUT = 45 * 60
SHUTDOWN_TIMEOUT = 180


def make_bake_key(directory: Path) -> tuple[Path, str]:
    """A throwaway ssh key pair for the bake boot: (private key, public key)."""
    key = directory / "bake-key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "undercloud-appliance-bake",
         "-f", str(key)],
        check=True,
    )  # fmt: skip
    return key, key.with_suffix(".pub").read_text()


class SshNotReady(Exception):
    """ssh into the booted guest did not succeed (yet): the exit status."""


@dataclass
class GuestShell:
    """Run commands in the booted guest over ssh as the appliance user."""

    guest: BootedGuest
    key: Path
    user: str
    build_log: Path
    #: How the build log tags this shell's commands: bake, verify.
    stage: str = "bake"

    def argv(self, command: str) -> list[str]:
        return [
            "ssh", "-i", str(self.key), "-p", str(self.guest.ssh_port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=15",
            f"{self.user}@127.0.0.1", command,
        ]  # fmt: skip

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, float]:
        """Run ``command`` (a shell command line, by design); log its output."""
        started = time.monotonic()
        try:
            result = subprocess.run(
                self.argv(command),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
            returncode, output = result.returncode, result.stdout + result.stderr
        except subprocess.TimeoutExpired as expired:
            returncode, output = 124, f"{expired.stdout or ''}timed out after {timeout:.0f}s"
        seconds = time.monotonic() - started
        with self.build_log.open("a", encoding="utf-8") as log_file:
            log_file.write(
                f"[{self.stage}] $ {command}\n{output}"
                f"[{self.stage}] exit {returncode} ({seconds:.1f}s)\n"
            )
        return returncode, output, seconds

    def wait_until_ready(self, timeout: float = 300) -> None:
        def probe() -> None:
            returncode = self.run("true", timeout=30)[0]
            if returncode != 0:
                raise SshNotReady(returncode)

        try:
            poll_until(timeout, SshNotReady, interval=3)(probe)
        except SshNotReady:
            raise BuildError(
                f"{self.stage}: ssh as {self.user} never succeeded within {timeout:.0f}s"
            ) from None


@dataclass
class BakeResult:
    smoke: dict[str, Any] | None
    boot_seconds: float = 0.0
    install_seconds: float = 0.0
    details: list[dict[str, Any]] = field(default_factory=list)


def run_smoke_commands(shell: GuestShell, commands: Sequence[str], stage: str) -> dict[str, Any]:
    """Run each smoke command; the manifest's ``smoke`` record (``stage``: build, verify)."""
    results = []
    for command in commands:
        returncode, output, seconds = shell.run(command)
        log.info("    smoke: %s -> exit %d", command, returncode)
        results.append(
            {
                "command": command,
                "returncode": returncode,
                "seconds": round(seconds, 2),
                "output_tail": output[-OUTPUT_TAIL_CHARS:],
            }
        )
    return {
        "passed": all(entry["returncode"] == 0 for entry in results),
        "stage": stage,
        "ran_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "results": results,
    }


def _shut_down(shell: GuestShell) -> None:
    shell.run("sudo systemctl poweroff", timeout=60)
    try:
        shell.guest.process.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BuildError(
            f"bake: the guest did not power off within {SHUTDOWN_TIMEOUT}s "
            f"(serial log: {shell.guest.serial_log})"
        ) from None


def bake(
    disk: Path,
    *,
    key: Path,
    user: str,
    boot_install_commands: Sequence[str],
    smoke_commands: Sequence[str],
    build_log: Path,
) -> BakeResult:
    """Boot ``disk`` (raw, written in place), install, smoke-test, power off."""
    result = BakeResult(smoke=None)
    with booted(disk, writable=True, image_format="raw", memory_mib=2048) as guest:
        result.boot_seconds = guest.wait_for(login_prompt=False, ssh=True, timeout=900)
        shell = GuestShell(guest, key, user, build_log)
        shell.wait_until_ready()
        log.info("    guest up after %.0fs", result.boot_seconds)
        started = time.monotonic()
        for number, command in enumerate(boot_install_commands, start=1):
            log.info("    boot install %d: %s", number, command)
            returncode, output, _ = shell.run(command)
            if returncode != 0:
                last = output.strip().splitlines()[-1:] or [""]
                raise BuildError(
                    f"boot install command {number} failed (exit {returncode}): {command}: "
                    f"{last[0][-200:]}"
                )
        result.install_seconds = time.monotonic() - started
        if smoke_commands:
            result.smoke = run_smoke_commands(shell, smoke_commands, stage="build")
        _shut_down(shell)
    return result
