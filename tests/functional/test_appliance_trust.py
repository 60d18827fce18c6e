"""The importer's ssh pins the host key, and libvirt's qemu user gets exactly what it needs.

No guest boots here: a real sshd on 127.0.0.1 (tests/support/sshd.py) stands
in for the appliance's, reached through the ``ssh.config`` the importer
writes; the ACLs are set with the real ``setfacl`` and tried as the real
unprivileged user.  tests/functional/test_import.py checks both against a
booted appliance.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.handoff import SshEndpoint, ssh_config_text, wait_for_ssh
from importer.qemu_access import grant_qemu_access
from tests.support.requirements import skip_or_fail
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


@pytest.fixture
def qemu_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        skip_or_fail("trying files as libvirt's qemu user needs root")
    if shutil.which("setfacl") is None or shutil.which("setpriv") is None:
        skip_or_fail("setfacl (acl) and setpriv (util-linux) are needed")
    try:
        return pwd.getpwnam("libvirt-qemu")
    except KeyError:
        skip_or_fail("there is no libvirt-qemu user (libvirt-daemon-system)")


def as_user(user: pwd.struct_passwd, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
         *command],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_qemu_user_reaches_the_disks_and_nothing_else(
    qemu_user: pwd.struct_passwd, tmp_path: Path
) -> None:
    home = tmp_path / "home"  # like /root: nobody else may enter
    state, cache = home / "state" / NAME, home / "cache"
    state.mkdir(parents=True)
    (cache / "layers").mkdir(parents=True)
    home.chmod(0o700)
    for directory in (state, cache, cache / "layers"):
        directory.chmod(0o700)
    layer = cache / "layers" / "layer.qcow2"
    layer.write_text("layer with host keys")
    layer.chmod(0o400)
    image = cache / "image.qcow2"
    image.write_text("verified image")
    image.chmod(0o444)
    client_key = state / "id_ed25519"
    client_key.write_text("private")
    client_key.chmod(0o600)
    assert as_user(qemu_user, "cat", str(layer)).returncode != 0

    grant_qemu_access(
        qemu_user.pw_uid,
        qemu_user.pw_gid,
        directories=[state, layer.parent, image.parent],
        readable=[layer, image],
    )
    for path in (layer, image):
        read = as_user(qemu_user, "cat", str(path))
        assert read.returncode == 0, read.stderr
    written = as_user(qemu_user, "sh", "-c", f"echo x >> {layer}")
    assert written.returncode != 0, "the backing images stay read-only to qemu"
    assert as_user(qemu_user, "cat", str(client_key)).returncode != 0
    assert as_user(qemu_user, "ls", str(home)).returncode != 0, "search, not list"
    assert as_user(qemu_user, "test", "-x", str(state)).returncode == 0
    assert layer.stat().st_mode & 0o007 == 0, "others still may not read the host keys"
    acl = subprocess.run(
        ["getfacl", "-cp", str(image)], capture_output=True, text=True, check=True
    ).stdout
    assert f"user:{qemu_user.pw_uid}" not in acl and "user:libvirt-qemu" not in acl, (
        "a world-readable image needs no ACL entry"
    )
