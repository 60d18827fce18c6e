"""Fixtures shared by every test area.

``appliance_build`` builds the small ``debian-ci`` profile once per test
session with the real tool (DIB, libguestfs) and hands out the build
directory (``undercloud.qcow2``, ``manifest.json``, ``build.log``).  Tests
must not modify it: copy, or use a qcow2 overlay.

Set ``UNDERCLOUD_APPLIANCE_TEST_BUILD=/path/to/build-dir`` to reuse an
existing build while developing; CI always builds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_PROFILE = "debian-ci"


def run_cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run ``undercloud-appliance ARGS`` as a user would, capturing output."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    result = subprocess.run(
        [sys.executable, "-m", "undercloud_appliance", *args], check=False, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"undercloud-appliance {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def appliance_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real build directory of the debian-ci profile, built once per run.

    ``scripts/test-all`` sets UNDERCLOUD_APPLIANCE_TEST_RUN_DIR to a fresh
    directory per run so the functional and benchmark tox envs share one
    build; without it, each pytest session builds its own.
    """
    reuse = os.environ.get("UNDERCLOUD_APPLIANCE_TEST_BUILD")
    if reuse:
        return Path(reuse)
    run_dir = os.environ.get("UNDERCLOUD_APPLIANCE_TEST_RUN_DIR")
    if run_dir:
        output = Path(run_dir) / "appliance-build"
        if (output / "manifest.json").exists():
            return output
    else:
        output = tmp_path_factory.mktemp("appliance-build") / "build"
    run_cli("build", TEST_PROFILE, "--output", str(output), "--replace", timeout=40 * 60)
    return output
