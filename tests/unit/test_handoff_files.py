"""``import`` writes ssh.config and hosts into ``--handoff-dir``, never over another's file.

Run as root in /etc, the import's ``hosts`` would be /etc/hosts: a file
the tool did not write (no header saying so) stops the import before it
changes anything, with one error line naming the file.  No guest boots
here: the check comes first, and libvirt (a socket that does not exist)
would be next.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from importer.handoff import inventory_text, ssh_config_text, write_handoff
from tests.conftest import run_cli
from tests.unit.test_importer import endpoint
from undercloud_appliance.errors import ApplianceError

REPO_ROOT = Path(__file__).resolve().parents[2]
BOGUS_URI = "qemu:///system?socket=/nonexistent/libvirt-sock"
SYSTEM_HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
USER_SSH_CONFIG = "Host build\n    HostName 10.0.0.5\n"


def run_import(tmp_path: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "UNDERCLOUD_APPLIANCE_STATE": str(tmp_path / "state"),
        "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache"),
        # It runs in another directory: it must still import this checkout.
        "PYTHONPATH": str(REPO_ROOT),
    }
    store = "file:///nonexistent"
    command = ["import", store, "--release", "debian-ci", "--name", "ua-handoff"]
    return run_cli(*command, "--connect", BOGUS_URI, *extra, check=False, env=env, cwd=cwd)


def one_error_line(result: subprocess.CompletedProcess, exit_code: int) -> str:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_written_files_say_so_and_are_replaced_by_the_next_import(tmp_path: Path) -> None:
    ssh_config, inventory = write_handoff(endpoint(), tmp_path)
    assert (ssh_config, inventory) == (tmp_path / "ssh.config", tmp_path / "hosts")
    for path in (ssh_config, inventory):
        assert path.read_text().startswith("# Written by undercloud-appliance import")
    write_handoff(endpoint(), tmp_path)  # ours: replaced without asking
    # OpenSSH reads the file with its header.
    effective = subprocess.run(
        ["ssh", "-F", str(ssh_config), "-G", "undercloud"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "hostname 127.0.0.1" in effective.splitlines()


def test_files_an_earlier_version_wrote_are_still_ours(tmp_path: Path) -> None:
    """No header then, but options naming a known_hosts in the appliances' state directories."""
    (tmp_path / "ssh.config").write_text(ssh_config_text(endpoint()))
    (tmp_path / "hosts").write_text(inventory_text(endpoint()))
    write_handoff(endpoint(), tmp_path)
    assert (tmp_path / "hosts").read_text().startswith("# Written by undercloud-appliance")


@pytest.mark.parametrize(("name", "text"), [("hosts", SYSTEM_HOSTS), ("ssh.config", "")])
def test_a_file_the_tool_did_not_write_is_never_overwritten(
    tmp_path: Path, name: str, text: str
) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ApplianceError, match=f"{tmp_path / name} exists and was not written by"):
        write_handoff(endpoint(), tmp_path)
    assert (tmp_path / name).read_text() == text
    assert sorted(path.name for path in tmp_path.iterdir()) == [name], "nothing half-written"


def test_a_symlink_to_a_system_file_is_not_followed(tmp_path: Path) -> None:
    system_hosts = tmp_path / "etc-hosts"
    system_hosts.write_text(SYSTEM_HOSTS)
    handoff = tmp_path / "handoff"
    handoff.mkdir()
    (handoff / "hosts").symlink_to(system_hosts)
    with pytest.raises(ApplianceError, match="not written by undercloud-appliance"):
        write_handoff(endpoint(), handoff)
    assert system_hosts.read_text() == SYSTEM_HOSTS


def test_import_refuses_before_it_changes_anything(tmp_path: Path) -> None:
    workdir = tmp_path / "etc"
    workdir.mkdir()
    (workdir / "hosts").write_text(SYSTEM_HOSTS)
    (workdir / "ssh.config").write_text(USER_SSH_CONFIG)
    line = one_error_line(run_import(tmp_path, workdir), 1)
    assert f"{workdir / 'ssh.config'} exists and was not written by undercloud-appliance" in line
    assert (workdir / "hosts").read_text() == SYSTEM_HOSTS
    assert (workdir / "ssh.config").read_text() == USER_SSH_CONFIG
    assert not (tmp_path / "state" / "ua-handoff").exists()
    assert not (tmp_path / "cache").exists()


def test_handoff_dir_chooses_where_the_files_go(tmp_path: Path) -> None:
    workdir = tmp_path / "etc"
    workdir.mkdir()
    (workdir / "hosts").write_text(SYSTEM_HOSTS)
    handoff = tmp_path / "handoff"
    handoff.mkdir()
    (handoff / "hosts").write_text("[my-group]\nmy-host\n")
    line = one_error_line(run_import(tmp_path, workdir, "--handoff-dir", str(handoff)), 1)
    assert f"{handoff / 'hosts'} exists and was not written by undercloud-appliance" in line
    (handoff / "hosts").unlink()
    # The handoff directory is fine now (the current one is not looked at):
    # the import gets as far as libvirt.
    line = one_error_line(run_import(tmp_path, workdir, "--handoff-dir", str(handoff)), 8)
    assert BOGUS_URI in line
    missing = tmp_path / "no-such-dir"
    line = one_error_line(run_import(tmp_path, workdir, "--handoff-dir", str(missing)), 5)
    assert f"--handoff-dir {missing}: no such directory" in line
