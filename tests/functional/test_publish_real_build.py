"""Publish and promote a real build (the shared ``appliance_build`` fixture).

The other publish tests use small fake builds; this one checks that what
``undercloud-appliance build`` writes is accepted as is and comes out
verifiable with coreutils.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli
from undercloud_appliance.store_layout import IMAGE_NAME, MD5_NAME, SUMS_NAME

pytestmark = pytest.mark.slow


def test_publish_and_promote_real_build(appliance_build: Path, tmp_path: Path) -> None:
    # Publish from a copy: tests must not touch the shared build directory.
    build = tmp_path / "build"
    build.mkdir()
    for name in (IMAGE_NAME, "manifest.json", "build.log"):
        if (appliance_build / name).exists():
            shutil.copyfile(appliance_build / name, build / name)
    manifest = json.loads((build / "manifest.json").read_text())
    store = tmp_path / "store"
    store.mkdir()
    url = f"file://{store}"

    run_cli("publish", str(build), "--store", url)
    # The shared build is baked: its smoke test passed, so no --force is needed.
    assert manifest["smoke"]["passed"] is True, manifest["smoke"]
    run_cli(
        "promote", manifest["release"], manifest["build_id"], "--label", "current", "--store", url
    )

    label = store / manifest["release"] / "current"
    for command in (["sha256sum", "-c", SUMS_NAME], ["md5sum", "-c", MD5_NAME]):
        subprocess.run(command, cwd=label, check=True, capture_output=True)
    listing = json.loads(run_cli("list", "--json", "--store", url).stdout)
    (release,) = listing["releases"]
    (entry,) = release["builds"]
    assert entry["build_id"] == manifest["build_id"]
    assert entry["size"] == (build / IMAGE_NAME).stat().st_size
    assert entry["puddle"] == manifest["puddle"].get("id")
