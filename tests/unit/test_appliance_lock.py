"""One command at a time per appliance name: the second fails at once, naming the first.

The lock is held here, in the test process, the way a running import
would hold it; the commands run as a user runs them.  libvirt is never
reached: ``--connect`` names a socket that does not exist, so a command
that gets past the lock fails with exit 8 instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from importer.appliance_state import ApplianceBusy, appliance_lock
from tests.conftest import run_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
BOGUS_URI = "qemu:///system?socket=/nonexistent/libvirt-sock"
NAME = "ua-locked"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("UNDERCLOUD_APPLIANCE_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("UNDERCLOUD_APPLIANCE_CACHE", str(tmp_path / "cache"))
    # The commands run in another directory: they must still import this checkout.
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def commands_on(name: str) -> dict[str, tuple[str, ...]]:
    return {
        "import": ("import", "file:///nonexistent", "--release", "debian-ci", "--name", name),
        "update": ("update", name, "--puddle", "2026-11-21.1"),
        "upgrade": ("upgrade", name, "--to-release", "debian-zed"),
        "rollback": ("rollback", name),
        "destroy": ("destroy", name),
    }


def test_second_command_on_a_name_fails_at_once_naming_the_holder(
    env: dict[str, str], tmp_path: Path
) -> None:
    with appliance_lock(NAME, "update"):
        for command, args in commands_on(NAME).items():
            result = run_cli(*args, "--connect", BOGUS_URI, check=False, env=env, cwd=tmp_path)
            assert result.returncode == 1, (command, result.stderr)
            assert "Traceback" not in result.stderr
            assert result.stderr.count("\n") == 1, result.stderr
            assert result.stderr.startswith(
                f"undercloud-appliance: error: appliance '{NAME}' is busy: "
                f"update (pid {os.getpid()}, since "
            ), result.stderr
        # Other names are not blocked: these get past the lock to libvirt.
        for command, args in commands_on("ua-other").items():
            result = run_cli(*args, "--connect", BOGUS_URI, check=False, env=env, cwd=tmp_path)
            assert "busy" not in result.stderr, (command, result.stderr)
            assert result.returncode == 8, (command, result.stderr)
    # Released: the same name is free again.
    result = run_cli("destroy", NAME, "--connect", BOGUS_URI, check=False, env=env, cwd=tmp_path)
    assert result.returncode == 8 and "busy" not in result.stderr, result.stderr


def test_lock_in_process_and_its_release(env: dict[str, str]) -> None:
    busy = rf"'{NAME}' is busy: import \(pid {os.getpid()}"
    with appliance_lock(NAME, "import"):
        with pytest.raises(ApplianceBusy, match=busy), appliance_lock(NAME, "destroy"):
            pass
        with appliance_lock("ua-other", "destroy"):
            pass
    with appliance_lock(NAME, "destroy"):
        pass
    # The lock is beside the state directories: a destroyed appliance leaves none.
    assert not (Path(env["UNDERCLOUD_APPLIANCE_STATE"]) / NAME).exists()
