"""The virtual BMC of an appliance's virtual nodes: one sushy-tools Redfish emulator.

sushy-emulator (sushy-tools, libvirt driver) runs on the host, one process
per appliance, and answers Redfish for exactly that appliance's node domains
(``SUSHY_EMULATOR_ALLOWED_INSTANCES``): the appliance's Ironic cannot power
off anything else on the host.  It listens on one host address only (127.0.0.1
for an appliance on qemu user networking, which reaches it as 10.0.2.2; the
libvirt network's gateway for one on a NAT network) and asks for HTTP basic
credentials (a bcrypt htpasswd file, as sushy-tools wants).

Its files live in ``<state dir>/bmc``: the config, the htpasswd file, the
password, the log and the pid file that ``stop`` and ``status`` use.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.manifest import write_file_atomically
from undercloud_appliance.retry_policies import poll_until

log = logging.getLogger(__name__)

BMC_DIR_NAME = "bmc"
USERNAME = "admin"
START_TIMEOUT_SECONDS = 60.0
# The first Redfish read of a system waited minutes here (libvirtd's storage
# driver answering its first volume lookup on a loaded host); later reads
# took milliseconds.  The import pays that once, before the appliance asks.
FIRST_READ_TIMEOUT_SECONDS = 600.0
STOP_TIMEOUT_SECONDS = 15.0


class BmcError(ApplianceError):
    """The BMC emulator could not be started, reached or stopped."""


@dataclass(frozen=True)
class BmcEndpoint:
    listen_address: str  # where the emulator listens on the host
    port: int
    guest_address: str  # how the appliance reaches that address
    username: str
    password: str

    @property
    def guest_url(self) -> str:
        return f"http://{self.guest_address}:{self.port}"

    @property
    def host_url(self) -> str:
        return f"http://{self.listen_address}:{self.port}"


def bmc_dir(state_dir: Path) -> Path:
    return state_dir / BMC_DIR_NAME


def check_port_free(address: str, port: int) -> None:
    """A clear error for a BMC port something else holds, before anything is made."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError as error:
            reason = "is in use" if error.errno == errno.EADDRINUSE else error.strerror
            raise BmcError(
                f"BMC port {port} on {address} {reason}: pass another --bmc-port"
            ) from None


def _password(directory: Path) -> str:
    path = directory / "password"
    if not path.is_file():
        write_file_atomically(path, secrets.token_urlsafe(18).encode(), mode=0o600)
    return path.read_text().strip()


def _write_config(
    directory: Path, uri: str, listen_address: str, port: int, allowed: list[str], password: str
) -> Path:
    import bcrypt  # sushy-tools' own dependency; its htpasswd wants bcrypt digests

    htpasswd = directory / "htpasswd"
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()
    write_file_atomically(htpasswd, f"{USERNAME}:{digest}\n".encode(), mode=0o600)
    config = directory / "emulator.conf"
    # sushy-emulator reads its config as Python (flask.Config.from_pyfile).
    text = "\n".join(
        [
            f"SUSHY_EMULATOR_LISTEN_IP = {listen_address!r}",
            f"SUSHY_EMULATOR_LISTEN_PORT = {port}",
            f"SUSHY_EMULATOR_LIBVIRT_URI = {uri!r}",
            f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}",
            f"SUSHY_EMULATOR_ALLOWED_INSTANCES = {allowed!r}",
            "SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = False",
            "",
        ]
    )
    write_file_atomically(config, text.encode(), mode=0o600)
    return config


def running_pid(state_dir: Path) -> int | None:
    """The emulator's pid when it runs (checked against /proc, not just the file)."""
    try:
        pid = int((bmc_dir(state_dir) / "emulator.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"sushy_tools" in cmdline else None


def start(
    state_dir: Path,
    *,
    uri: str,
    listen_address: str,
    guest_address: str,
    port: int,
    allowed_instances: list[str],
) -> BmcEndpoint:
    """Start the emulator (or keep the one running) and wait until Redfish answers."""
    directory = bmc_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    password = _password(directory)
    endpoint = BmcEndpoint(listen_address, port, guest_address, USERNAME, password)
    if running_pid(state_dir) is not None:
        return endpoint
    check_port_free(listen_address, port)
    config = _write_config(directory, uri, listen_address, port, allowed_instances, password)
    with open(directory / "emulator.log", "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sushy_tools.emulator.main", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command, like the domains it serves
        )
    write_file_atomically(directory / "emulator.pid", f"{process.pid}\n".encode())

    def answers() -> None:
        if process.poll() is not None:
            raise BmcError(
                f"BMC emulator exited with status {process.returncode}: "
                f"{_last_line(directory / 'emulator.log')}"
            )
        requests.get(f"{endpoint.host_url}/redfish/v1/", timeout=5).raise_for_status()

    try:
        poll_until(START_TIMEOUT_SECONDS, requests.RequestException)(answers)
    except (requests.RequestException, BmcError) as error:
        stop(state_dir)
        if isinstance(error, BmcError):
            raise
        raise BmcError(
            f"BMC emulator on {endpoint.host_url} did not answer within "
            f"{START_TIMEOUT_SECONDS:.0f}s: {_last_line(directory / 'emulator.log')}"
        ) from None
    log.info("BMC emulator (sushy-tools) on %s, pid %d", endpoint.host_url, process.pid)
    for identity in allowed_instances:
        try:
            requests.get(
                f"{endpoint.host_url}/redfish/v1/Systems/{identity}",
                auth=(USERNAME, password),
                timeout=FIRST_READ_TIMEOUT_SECONDS,
            ).raise_for_status()
        except requests.RequestException as error:
            stop(state_dir)
            raise BmcError(
                f"BMC emulator on {endpoint.host_url} cannot read system {identity}: "
                f"{type(error).__name__}: {_last_line(directory / 'emulator.log')}"
            ) from None
    return endpoint


def stop(state_dir: Path) -> bool:
    """Stop the emulator if it runs; True when one was stopped."""
    pid = running_pid(state_dir)
    (bmc_dir(state_dir) / "emulator.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)

    def gone() -> None:
        if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            raise ProcessLookupError(pid)

    try:
        poll_until(STOP_TIMEOUT_SECONDS, ProcessLookupError, interval=0.2)(gone)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [line for line in lines if line]
    return lines[-1][:200] if lines else "empty log"
