"""A throwaway sshd on 127.0.0.1, for tests of the ssh (rsync) store.

sshd runs as a child process in ``-D`` mode on a free port with its own
host key, configuration, pid file and one authorized client key, all in a
private temporary directory.  ``ssh_command`` is an ``ssh -F <config>``
command line that trusts exactly that host key and uses that client key;
pass it to the tool as ``UNDERCLOUD_APPLIANCE_SSH_COMMAND``.

sshd must run as root (it changes to the logging-in user); tests skip when
that is not possible.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.child_server import ChildServer
from tests.support.requirements import skip_or_fail

SSHD_BINARY = "/usr/sbin/sshd"


class SshServer(ChildServer):
    """sshd accepting the generated client key for the current user."""

    program = "sshd"
    stderr_log = "sshd.log"

    def __init__(self) -> None:
        super().__init__()
        self.user = getpass.getuser()

    @property
    def ssh_config(self) -> Path:
        return self.workdir / "ssh_config"

    @property
    def ssh_command(self) -> str:
        """An ssh command line (like GIT_SSH_COMMAND) that reaches this server."""
        return f"ssh -F {self.ssh_config}"

    def url(self, path: Path | str) -> str:
        """``ssh://user@127.0.0.1:port/abs/path`` for a directory on this host."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{Path(path).resolve()}"

    def start(self) -> SshServer:
        if os.geteuid() != 0:
            skip_or_fail("the test sshd needs root")
        if shutil.which(SSHD_BINARY) is None or shutil.which("ssh") is None:
            skip_or_fail("openssh-server/openssh-client are not installed")
        # sshd refuses to start without its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        return super().start()

    def _prepare(self, workdir: Path) -> None:
        for key in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / key)],
                check=True,
            )
        (workdir / "authorized_keys").write_text((workdir / "client_key.pub").read_text())

    def _configure(self, workdir: Path) -> list[str]:
        self._write_configs()
        return [SSHD_BINARY, "-D", "-e", "-f", str(workdir / "sshd_config")]

    def _ready(self) -> bool:
        # Accepting TCP is not enough: a login must get through.
        return self.run("true").returncode == 0

    def run(self, command: str) -> subprocess.CompletedProcess:
        """Run ``command`` through this server, as the tool would."""
        return subprocess.run(
            [*self.ssh_command.split(), "-p", str(self.port), f"{self.user}@127.0.0.1", command],
            capture_output=True,
            text=True,
            check=False,
        )

    def _write_configs(self) -> None:
        workdir = self.workdir
        (workdir / "sshd_config").write_text(
            f"""
Port {self.port}
ListenAddress 127.0.0.1
HostKey {workdir / "host_key"}
PidFile {workdir / "sshd.pid"}
AuthorizedKeysFile {workdir / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel ERROR
Subsystem sftp internal-sftp
"""
        )
        host_key = (workdir / "host_key.pub").read_text().split()
        (workdir / "known_hosts").write_text(
            f"[127.0.0.1]:{self.port} {host_key[0]} {host_key[1]}\n"
        )
        (workdir / "ssh_config").write_text(
            f"""
Host *
    IdentityFile {workdir / "client_key"}
    IdentitiesOnly yes
    UserKnownHostsFile {workdir / "known_hosts"}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
"""
        )


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[SshServer]:
    """One sshd for the test session."""
    with SshServer() as server:
        yield server
