"""A derived build (parent + newer puddle, then verified) vs a full rebuild of the profile.

The parent is this run's P1 build (debian-ci updated offline to puddle P1);
timed: ``build debian-ci --from P1_BUILD --puddle P2``, the whole command
(libguestfs update, compression, then ``verify``: boot, smoke commands).
The full rebuild is this run's build of the same profile
(``appliance_build``: its manifest's step timings, measured in this run,
DIB, bake and smoke included).

Goal: derived / full <= 0.3x.  Printed, never asserted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support.puddles import P2, PuddleSite
from undercloud_appliance.manifest import read_manifest

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]

TIMEOUT = 60 * 60


def test_derived_build_vs_full_rebuild(
    appliance_build: Path, p1_build_dir: Path, puddle_site: PuddleSite, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = run_cli(
        "-q", "build", "debian-ci", "--from", str(p1_build_dir), "--puddle", P2,
        "--puddle-base", puddle_site.url, "--output", str(tmp_path / "derived"), "--json",
        env={**os.environ, "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache")},
        timeout=TIMEOUT,
    )  # fmt: skip
    derived = time.monotonic() - started
    printed = json.loads(result.stdout)
    assert printed["verified"] is True and printed["puddle_id"] == P2
    manifest = read_manifest(tmp_path / "derived")
    full = sum(read_manifest(appliance_build)["timings"].values())
    print()
    print(f"full build (this run's build of the profile): {full:7.1f}s")
    print(f"derived build, verified (P1 -> P2):            {derived:7.1f}s")
    print("  update steps: " + ", ".join(f"{k} {v:.1f}" for k, v in manifest["timings"].items()))
    print(f"derived / full: {derived / full:.2f}x (goal <= 0.3x)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
