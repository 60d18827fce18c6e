"""Two test processes share libvirtd: the first to leave does not stop it.

The functional suite runs in two pytest-xdist workers; an appliance
imported by one must keep its libvirtd when a test on the other worker,
which found libvirtd stopped and started it, ends first
(``tests/support/libvirtd.py``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO_ROOT

USER = """
import subprocess, sys, time
from pathlib import Path
from tests.support.libvirtd import running_libvirtd
with running_libvirtd() as uri:
    Path(sys.argv[1]).write_text("in")
    while not Path(sys.argv[2]).exists():
        time.sleep(0.1)
    listed = subprocess.run(["virsh", "-c", uri, "list", "--all"], capture_output=True)
    print("virsh", listed.returncode, flush=True)
"""


def start_user(entered: Path, leave: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", USER, str(entered), str(leave)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def test_libvirtd_outlives_the_first_of_two_users_to_leave(tmp_path: Path) -> None:
    first = start_user(tmp_path / "first-in", tmp_path / "first-leave")
    wait_for(tmp_path / "first-in")
    second = start_user(tmp_path / "second-in", tmp_path / "second-leave")
    wait_for(tmp_path / "second-in")
    (tmp_path / "first-leave").touch()
    assert first.communicate(timeout=120)[0].strip() == "virsh 0"
    (tmp_path / "second-leave").touch()
    assert second.communicate(timeout=120)[0].strip() == "virsh 0", (
        "libvirtd went away when the other user left"
    )
