"""Build speed, printed as ratios against a baseline in the same run.

- overhead: our whole ``build`` (DIB + libguestfs finishing + compression +
  manifest) vs a bare ``disk-image-create -t qcow2`` of the same elements
  and block-device layout (DIB compresses qcow2 itself).  Goal <= 1.05x.
- warm vs cold: our build with the DIB cache filled vs with an empty one.
  Goal <= 0.5x.  On a fresh CI host the run's shared build (``appliance_build``)
  started from an empty cache: its step timings are the cold run, which saves
  a whole extra build; elsewhere the benchmark makes a cold build itself.

Our builds here skip the bake stage (``bake=False``, ``--no-bake``): booting
the image to configure the undercloud is work a bare DIB build does not do
at all, and its minutes under TCG would swamp both ratios.  The bake's
own duration is in every baked build's manifest (``timings``).

Never asserts on time: the numbers are printed for people to read.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from builders import dib
from builders.appliance_data import write_appliance_data
from builders.build import APPLIANCE_ELEMENTS, build, cache_root
from builders.profiles import load_profile
from tests.conftest import TEST_PROFILE, appliance_build_was_cold
from undercloud_appliance.manifest import read_manifest

BAKE_STEPS = frozenset({"bake-in-booted-image", "seal-after-bake"})

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]


def timed(function, *args, **kwargs) -> float:
    started = time.monotonic()
    function(*args, **kwargs)
    return time.monotonic() - started


def bare_dib_build(work: Path) -> None:
    """disk-image-create alone, with exactly the elements and settings we use."""
    data = load_profile(TEST_PROFILE).data
    write_appliance_data(
        work / "data",
        package_manager=data["puddle"]["package_manager"],
        repos=[],
        packages=data["undercloud"]["packages"],
        install_commands=data["undercloud"]["install_commands"],
        user=data["image"]["user"],
        provisioning=data["provisioning"],
    )
    env = dib.dib_environment(data["distro"], work / "data", cache_root() / "build", {})
    elements = [data["distro"]["base_element"], *APPLIANCE_ELEMENTS, *data["elements"]]
    command = dib.dib_command(elements, work / "bare")
    command[command.index("raw")] = "qcow2"
    dib.run_dib(command, env, work / "bare.log")
    assert (work / "bare.qcow2").exists()


def test_build_overhead_and_cache(
    appliance_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # appliance_build has filled the DIB cache: both runs below are warm.
    bare = timed(bare_dib_build, tmp_path)
    ours_warm = timed(build, TEST_PROFILE, output=tmp_path / "warm", bake=False)
    shutil.rmtree(tmp_path / "warm")

    if appliance_build_was_cold(appliance_build):
        # This run's shared build started from an empty DIB cache (a fresh CI
        # host): its own step timings, bake steps left out, are the cold run.
        timings = read_manifest(appliance_build)["timings"]
        ours_cold = sum(v for k, v in timings.items() if k not in BAKE_STEPS)
        cold_source = "this run's shared build, bake steps left out"
    else:
        monkeypatch.setenv("UNDERCLOUD_APPLIANCE_CACHE", str(tmp_path / "empty-cache"))
        ours_cold = timed(build, TEST_PROFILE, output=tmp_path / "cold", bake=False)
        shutil.rmtree(tmp_path / "empty-cache", ignore_errors=True)
        assert os.path.exists(tmp_path / "cold" / "manifest.json")
        cold_source = "a no-bake build with an empty cache"

    print()
    print(f"bare disk-image-create (warm cache): {bare:7.1f}s")
    print(f"our build, no bake (warm cache):     {ours_warm:7.1f}s")
    print(f"our build, no bake (cold cache):     {ours_cold:7.1f}s  ({cold_source})")
    print(f"overhead ratio ours/bare: {ours_warm / bare:.2f}x (goal <= 1.05x)")
    print(f"warm/cold ratio:          {ours_warm / ours_cold:.2f}x (goal <= 0.50x)")
