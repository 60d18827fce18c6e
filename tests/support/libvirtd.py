"""Run libvirtd and virtlogd for a test when the host has no init system doing it.

Containers here have no systemd: ``libvirtd -d`` and ``virtlogd -d`` are
started by hand, and only the daemons test processes started are stopped
again (another engineer's test may be using a daemon that was already
running).  The same goes for libvirt's ``default`` NAT network.

Test processes share the daemons they start: the functional suite runs in
two pytest-xdist workers, and one worker's appliance must not lose its
libvirtd when the other worker's test ends.  Each user holds a shared
``flock`` on ``USERS_LOCK`` while it uses the daemons.  Under
``STARTING_LOCK``, the first user starts them (recording their pids in
``STARTED_RECORD``) and the last, the one that can turn its shared lock
into an exclusive one, stops what is recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

SYSTEM_URI = "qemu:///system"
LIBVIRTD_SOCKET = Path("/run/libvirt/libvirt-sock")
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")
LIBVIRTD_PIDFILE = Path("/run/libvirtd.pid")
VIRTLOGD_PIDFILE = Path("/run/virtlogd.pid")
LOG_DIR = Path("/var/log/libvirt")
STARTING_LOCK = Path("/run/undercloud-appliance-tests/libvirtd-starting.lock")
USERS_LOCK = Path("/run/undercloud-appliance-tests/libvirtd-users.lock")
STARTED_RECORD = Path("/run/undercloud-appliance-tests/libvirtd-started.json")
DAEMON_NAMES = ("virtlogd", "libvirtd")


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _wait_for_socket(socket_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not socket_path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{socket_path} did not appear within {timeout:.0f}s")
        time.sleep(0.1)


def _start_daemon(binary: str, pidfile: Path, socket_path: Path) -> int:
    subprocess.run([binary, "-d"], check=True, timeout=30)
    _wait_for_socket(socket_path, timeout=30)
    pid = _pid_alive(pidfile)
    if pid is None:
        raise RuntimeError(f"{binary} started but {pidfile} names no live process")
    return pid


def _stop(pid: int, timeout: float = 15) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _fix_kvm_group() -> None:
    # libvirt hangs probing qemu when /dev/kvm belongs to the wrong group.
    kvm = Path("/dev/kvm")
    if kvm.exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["chgrp", "kvm", str(kvm)], check=False, timeout=10)


def _started_by_tests() -> list[int]:
    try:
        pids = json.loads(STARTED_RECORD.read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if isinstance(pid, int)]


def _is_daemon(pid: int) -> bool:
    """Whether ``pid`` is still one of the daemons (not a reused pid)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in DAEMON_NAMES
    except OSError:
        return False


@contextlib.contextmanager
def _held(lock: IO[str]) -> Iterator[None]:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def running_libvirtd() -> Iterator[str]:
    """Yield the qemu:///system URI with libvirtd and virtlogd running."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    USERS_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(STARTING_LOCK, "a") as starting, open(USERS_LOCK, "a") as users:
        with _held(starting):
            _fix_kvm_group()
            started = _started_by_tests()
            if _pid_alive(VIRTLOGD_PIDFILE) is None or not VIRTLOGD_SOCKET.exists():
                started.append(_start_daemon("virtlogd", VIRTLOGD_PIDFILE, VIRTLOGD_SOCKET))
                STARTED_RECORD.write_text(json.dumps(started))
            if _pid_alive(LIBVIRTD_PIDFILE) is None or not LIBVIRTD_SOCKET.exists():
                started.append(_start_daemon("libvirtd", LIBVIRTD_PIDFILE, LIBVIRTD_SOCKET))
                STARTED_RECORD.write_text(json.dumps(started))
            fcntl.flock(users, fcntl.LOCK_SH)
        try:
            yield SYSTEM_URI
        finally:
            with _held(starting):
                try:
                    # Only the last user gets the users' lock exclusively.
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
                for pid in reversed(_started_by_tests()):
                    if _is_daemon(pid):
                        _stop(pid)
                STARTED_RECORD.unlink(missing_ok=True)


def _virsh(uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["virsh", "-c", uri, *args], check=check, capture_output=True, text=True, timeout=120
    )


@contextlib.contextmanager
def active_default_network(uri: str = SYSTEM_URI) -> Iterator[bool]:
    """Start libvirt's ``default`` network if it is defined and inactive.

    Yields whether the network is usable; stops it again only if started here.
    """
    info = _virsh(uri, "net-info", "default", check=False)
    if info.returncode != 0:
        yield False
        return
    active = any(
        line.split()[:1] == ["Active:"] and line.split()[-1] == "yes"
        for line in info.stdout.splitlines()
    )
    started_here = False
    if not active:
        start = _virsh(uri, "net-start", "default", check=False)
        if start.returncode != 0:
            yield False
            return
        started_here = True
    try:
        yield True
    finally:
        if started_here:
            _virsh(uri, "net-destroy", "default", check=False)
