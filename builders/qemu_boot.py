"""Boot a built image once under qemu: user networking, ssh forwarded.

Used to check that a build boots (login prompt on the serial console, an
ssh banner on the forwarded port) and, later, to run install steps that
need a running system.  The image itself is never written: qemu boots a
throwaway qcow2 overlay.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from undercloud_appliance.errors import BuildError
from undercloud_appliance.hypervisor import qemu_accel_args
from undercloud_appliance.retry_policies import poll_until

log = logging.getLogger(__name__)

LOGIN_PROMPT = b"login:"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class GuestNotBooted(Exception):
    """No login prompt or ssh banner yet."""


@dataclass
class BootedGuest:
    """A running qemu guest and where to reach it."""

    process: subprocess.Popen
    serial_log: Path
    ssh_port: int

    def serial_output(self) -> bytes:
        return self.serial_log.read_bytes() if self.serial_log.exists() else b""

    def ssh_banner(self, timeout: float = 5) -> bytes:
        """The first bytes sshd sends, or b'' if nothing answers yet."""
        try:
            with socket.create_connection(("127.0.0.1", self.ssh_port), timeout=timeout) as conn:
                conn.settimeout(timeout)
                return conn.recv(64)
        except OSError:
            return b""

    def wait_for(
        self, *, login_prompt: bool = True, ssh: bool = True, timeout: float = 600
    ) -> float:
        """Wait until the guest shows a login prompt and/or an ssh banner."""
        started = time.monotonic()

        def check_booted() -> None:
            if self.process.poll() is not None:
                raise BuildError(
                    f"qemu exited with {self.process.returncode} before the guest booted "
                    f"(serial log: {self.serial_log})"
                )
            have_login = not login_prompt or LOGIN_PROMPT in self.serial_output()
            if not (have_login and (not ssh or self.ssh_banner().startswith(b"SSH-"))):
                raise GuestNotBooted

        try:
            poll_until(timeout, GuestNotBooted, interval=2)(check_booted)
        except GuestNotBooted:
            raise BuildError(
                f"guest did not boot within {timeout:.0f}s (serial log: {self.serial_log})"
            ) from None
        return time.monotonic() - started


@contextlib.contextmanager
def booted(
    image: Path,
    *,
    memory_mib: int = 1536,
    vcpus: int = 2,
    writable: bool = False,
    image_format: str = "qcow2",
) -> Iterator[BootedGuest]:
    """Boot ``image``; stop qemu on exit.

    By default the guest writes to a temporary overlay and ``image`` is
    untouched; ``writable=True`` boots the image itself (the build's bake
    stage, whose changes are the point).
    """
    with tempfile.TemporaryDirectory(prefix="appliance-boot-") as scratch:
        if writable:
            disk, disk_format = image.absolute(), image_format
        else:
            disk, disk_format = Path(scratch) / "overlay.qcow2", "qcow2"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", image_format,
                 "-b", str(image.absolute()), str(disk)],
                check=True,
            )  # fmt: skip
        serial_log = Path(scratch) / "serial.log"
        port = free_port()
        command = [
            "qemu-system-x86_64",
            *qemu_accel_args(),
            "-m", str(memory_mib),
            "-smp", str(vcpus),
            "-nographic",
            "-monitor", "none",
            "-serial", f"file:{serial_log}",
            "-drive", f"file={disk},if=virtio,format={disk_format}",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
        ]  # fmt: skip
        log.debug("booting: %s", " ".join(command))
        qemu_errors = (Path(scratch) / "qemu.stderr").open("wb")
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=qemu_errors
        )
        try:
            yield BootedGuest(process, serial_log, port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            qemu_errors.close()
