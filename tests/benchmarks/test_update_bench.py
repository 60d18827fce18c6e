"""Minor update in place vs rebuild + re-import, for the same puddle change.

The appliance is this run's P1 build (debian-ci updated offline to puddle
P1, shared with the functional tests through the run directory), imported
under libvirtd with qemu user networking.  Timed:

- in place: ``update NAME --puddle 2026-11-21.1`` (P1 -> P2), the whole
  command: snapshot, repo switch, apt refresh and upgrade, the profile's
  update commands, smoke commands;
- rebuild + re-import: what a user would do instead.  The rebuild is this
  run's build of the same profile (``appliance_build``: its manifest's step
  timings, measured in this run, bake included); the re-import is the
  import above (from the cache: overlay, customisation, guest boot to ssh).

Goal: in place <= 0.25x of rebuild + re-import.  Printed, never asserted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import appliance_name_for_test, run_cli
from tests.support.libvirtd import running_libvirtd
from tests.support.puddles import P2, PuddleSite
from undercloud_appliance.manifest import read_manifest

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]

NAME = appliance_name_for_test("update-bench")
TIMEOUT = 30 * 60


def test_update_in_place_vs_rebuild_and_reimport(
    appliance_build: Path, p1_build_dir: Path, puddle_site: PuddleSite, tmp_path: Path
) -> None:
    p1 = read_manifest(p1_build_dir)
    (tmp_path / "store").mkdir()
    store = f"file://{tmp_path / 'store'}"
    run_cli("-q", "publish", str(p1_build_dir), "--store", store)
    env = {
        **os.environ,
        "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache"),
        "UNDERCLOUD_APPLIANCE_STATE": str(tmp_path / "state"),
    }
    with running_libvirtd() as uri:
        common = {"env": env, "cwd": tmp_path, "timeout": TIMEOUT}
        try:
            started = time.monotonic()
            run_cli(
                "-q",
                "import",
                store,
                "--release",
                p1["release"],
                "--build",
                p1["build_id"],
                "--name",
                NAME,
                "--network",
                "user",
                "--memory",
                "1536",
                "--vcpus",
                "2",
                "--skip-smoke",
                "--connect",
                uri,
                **common,
            )
            reimport = time.monotonic() - started
            started = time.monotonic()
            updated = json.loads(
                run_cli(
                    "-q",
                    "update",
                    NAME,
                    "--puddle",
                    P2,
                    "--puddle-base",
                    puddle_site.url,
                    "--json",
                    "--connect",
                    uri,
                    **common,
                ).stdout
            )
            in_place = time.monotonic() - started
        finally:
            run_cli("-q", "destroy", NAME, "--connect", uri, env=env, check=False)
    assert updated["puddle_id"] == P2

    rebuild_steps = read_manifest(appliance_build)["timings"]
    rebuild = sum(rebuild_steps.values())
    print()
    print(f"rebuild (this run's build of the profile): {rebuild:7.1f}s")
    print(f"re-import from the cache to ssh-ready:     {reimport:7.1f}s")
    print(f"update in place (P1 -> P2, whole command): {in_place:7.1f}s")
    print("  steps: " + ", ".join(f"{k} {v:.1f}" for k, v in updated["timings"].items()))
    print(
        f"in place / (rebuild + re-import): {in_place / (rebuild + reimport):.2f}x (goal <= 0.25x)"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
