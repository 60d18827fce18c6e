"""Fixtures shared by every test area.

``appliance_build`` builds the small ``debian-ci`` profile once per test
session with the real tool (DIB, libguestfs) and hands out the build
directory (``undercloud.qcow2``, ``manifest.json``, ``build.log``).  Tests
must not modify it: copy, or use a qcow2 overlay.

Set ``UNDERCLOUD_APPLIANCE_TEST_BUILD=/path/to/build-dir`` to reuse an
existing build while developing; CI always builds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import parallel_schedule
from tests.support.puddles import puddle_site  # noqa: F401 - session fixture, shared

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_PROFILE = "debian-ci"


def appliance_name_for_test(purpose: str) -> str:
    """The libvirt name of an appliance a test imports: ``ua-PURPOSE-PID``.

    Never a name a user may have imported (``scripts/main-job`` keeps its
    ``undercloud`` defined), and unique per test run.
    """
    return f"ua-{purpose}-{os.getpid()}"


def run_cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run ``undercloud-appliance ARGS`` as a user would, capturing output."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    result = subprocess.run(
        [sys.executable, "-m", "undercloud_appliance_cli", *args], check=False, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"undercloud-appliance {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    parallel_schedule.order_items(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    return parallel_schedule.make_scheduler(config, log)


@contextlib.contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: one pytest-xdist worker at a time."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
    if not run_dir:
        return _build_test_profile(tmp_path_factory.mktemp("appliance-build") / "build")
    # The workers of one run share the build: the first makes it, the others
    # wait for it, and a failed build is not tried again by the next worker.
    with held_lock(Path(run_dir) / "appliance-build.lock"):
        output = Path(run_dir) / "appliance-build"
        failed = Path(run_dir) / "appliance-build.failed"
        if (output / "manifest.json").exists():
            return output
        if failed.exists():
            raise AssertionError(f"this run's appliance build failed:\n{failed.read_text()}")
        try:
            return _build_test_profile(output)
        except BaseException as error:
            failed.write_text(f"{error}\n")
            raise


def _build_test_profile(output: Path) -> Path:
    from builders.build import cache_root

    cold = not any((cache_root() / "build" / "dib").glob("*"))
    run_cli("build", TEST_PROFILE, "--output", str(output), "--replace", timeout=40 * 60)
    # The build benchmark uses a build made with an empty DIB cache as its cold run.
    (output.parent / DIB_CACHE_STATE_NAME).write_text("cold\n" if cold else "warm\n")
    return output


DIB_CACHE_STATE_NAME = "appliance-build.dib-cache"


def appliance_build_was_cold(build_dir: Path) -> bool:
    """Whether ``appliance_build`` ran with an empty DIB cache (a cold build)."""
    marker = build_dir.parent / DIB_CACHE_STATE_NAME
    return marker.is_file() and marker.read_text().strip() == "cold"


@pytest.fixture(scope="session")
def p1_offline_update(
    appliance_build: Path,
    puddle_site,  # noqa: F811 - fixture
    tmp_path_factory: pytest.TempPathFactory,
):
    """``appliance_build`` updated offline to puddle P1, installing the probe package.

    Returns ``(input file digests before, DerivedBuildResult)``; shared by the
    offline and online update tests, which both start from a P1 appliance.
    """
    from builders.derived import derive_build
    from tests.support.fake_build import file_digests
    from tests.support.puddles import P1, PROBE_PACKAGE

    before = file_digests(appliance_build)
    run_dir = os.environ.get("UNDERCLOUD_APPLIANCE_TEST_RUN_DIR")
    if run_dir and not (Path(run_dir) / "p1-build").exists():
        output = Path(run_dir) / "p1-build"  # the benchmarks env reuses it (p1_build_dir)
    else:
        output = tmp_path_factory.mktemp("offline-update") / "p1"
    result = derive_build(
        appliance_build,
        P1,
        puddle_base=puddle_site.url,
        output_dir=output,
        install_packages=[PROBE_PACKAGE],
    )
    return before, result


@pytest.fixture(scope="session")
def p1_build_dir(request: pytest.FixtureRequest) -> Path:
    """The P1 build directory: the one this run's functional env made, else made now."""
    run_dir = os.environ.get("UNDERCLOUD_APPLIANCE_TEST_RUN_DIR")
    if run_dir and (Path(run_dir) / "p1-build" / "manifest.json").exists():
        return Path(run_dir) / "p1-build"
    _, result = request.getfixturevalue("p1_offline_update")
    return result.output_dir
