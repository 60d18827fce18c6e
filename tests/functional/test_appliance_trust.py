"""The importer's ssh pins the appliance's host key.

No guest boots here: a real sshd on 127.0.0.1 (tests/support/sshd.py) stands
in for the appliance's, reached through the ``ssh.config`` the importer
writes.  tests/functional/test_import.py checks it against a booted
appliance.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.handoff import SshEndpoint, ssh_config_text, wait_for_ssh
from tests.support.sshd import SshServer
from undercloud_appliance.errors import ChecksumError

NAME = "appliance"


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with SshServer() as server:
        yield server


def handoff_config(server: SshServer, known_hosts: Path) -> Path:
    """The ssh.config the importer writes for an appliance at the test sshd's address."""
    endpoint = SshEndpoint(
        name=NAME,
        host="127.0.0.1",
        port=server.port,
        identity=server.workdir / "client_key",
        known_hosts=known_hosts,
    )
    config = known_hosts.with_name("ssh.config")
    config.write_text(ssh_config_text(endpoint))
    return config


def ssh_as_test_user(server: SshServer, config: Path) -> subprocess.CompletedProcess:
    # ssh.config logs in as the appliance's user; the test sshd has only ours.
    return subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-l", server.user, NAME, "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pin(known_hosts: Path, port: int, public_key_file: Path) -> None:
    algorithm, key = public_key_file.read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {algorithm} {key}\n")


def test_only_the_pinned_host_key_is_accepted(sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    config = handoff_config(sshd, known_hosts)

    pin(known_hosts, sshd.port, sshd.workdir / "host_key.pub")
    pinned = ssh_as_test_user(sshd, config)
    assert pinned.returncode == 0, pinned.stderr

    # Unknown: nothing is learnt on first use.
    known_hosts.write_text("")
    unknown = ssh_as_test_user(sshd, config)
    assert unknown.returncode != 0 and "Host key verification failed" in unknown.stderr
    assert known_hosts.read_text() == "", "nothing was added to known_hosts"

    # Another key pinned: refused, and the importer's wait stops at once.
    other_key = tmp_path / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    pin(known_hosts, sshd.port, other_key.with_suffix(".pub"))
    other = ssh_as_test_user(sshd, config)
    assert other.returncode != 0 and "Host key verification failed" in other.stderr
    started = time.monotonic()
    with pytest.raises(ChecksumError, match="not the one pinned") as refused:
        wait_for_ssh(config, NAME, timeout=60, still_running=lambda: True)
    assert time.monotonic() - started < 20, "a host key mismatch is not retried until timeout"
    assert refused.value.exit_code == 6
