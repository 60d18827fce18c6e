"""A small but valid build directory, without running a real build.

``make_fake_build(directory)`` writes what ``undercloud-appliance build``
leaves behind: a real qcow2 (``qemu-img convert`` of random data, so it has
real content and a real header), a ``manifest.json`` that passes
``validate_manifest`` with the image's true sha256 and sizes, and a
``build.log``.  Tests that need a real appliance use the ``appliance_build``
fixture (tests/conftest.py) instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from tests.support.requirements import skip_or_fail
from undercloud_appliance.manifest import (
    Manifest,
    ManifestImage,
    new_build_id,
    puddle_section,
    utc_timestamp,
)
from undercloud_appliance.qcow2 import convert_to_qcow2
from undercloud_appliance.store_layout import IMAGE_NAME

MIB = 1024 * 1024


def write_random_qcow2(path: Path, data_mib: int = 2, virtual_mib: int | None = None) -> None:
    """A qcow2 whose first ``data_mib`` MiB hold random data."""
    if shutil.which("qemu-img") is None:
        skip_or_fail("qemu-img is not installed (scripts/host-packages.txt: qemu-utils)")
    virtual_mib = max(virtual_mib or 2 * data_mib, data_mib, 1)
    raw = path.with_name(path.name + ".raw")
    with raw.open("wb") as handle:
        for _ in range(data_mib):
            handle.write(os.urandom(MIB))
        handle.truncate(virtual_mib * MIB)
    try:
        convert_to_qcow2(raw, path, source_format="raw", compress=False)
    finally:
        raw.unlink(missing_ok=True)


def fake_manifest(
    image: Path,
    release: str = "debian-ci",
    build_id: str | None = None,
    puddle_id: str | None = "2026-11-21.1",
    smoke_passed: bool | None = True,
) -> dict[str, Any]:
    """A manifest describing ``image`` truthfully (sha256, sizes)."""
    smoke = None
    if smoke_passed is not None:
        smoke = {
            "passed": smoke_passed,
            "ran_at": utc_timestamp(),
            "results": [
                {
                    "command": "openstack endpoint list",
                    "returncode": 0 if smoke_passed else 1,
                    "seconds": 1.5,
                    "output_tail": "",
                }
            ],
        }
    return Manifest(
        build_id=build_id or new_build_id(),
        release=release,
        profile={"name": release, "file": f"{release}.yaml", "resolved": {}, "origins": {}},
        distro={"family": "debian", "release": "bookworm", "os": {}},
        puddle=puddle_section(
            puddle_id=puddle_id,
            requested=puddle_id,
            package_manager="apt",
            base_url=None,
            repos=[],
        ),
        dib={"version": "3.43.0", "elements": [], "image_types": ["qcow2"]},
        image=ManifestImage.of_file(image, compression=None),
        packages={"python3-tripleoclient": "18.0.0-1"},
        undercloud_packages=["python3-tripleoclient"],
        timings={"fake-build": 0.1},
        smoke=smoke,
    ).to_dict()


def make_fake_build(
    directory: Path,
    release: str = "debian-ci",
    build_id: str | None = None,
    data_mib: int = 2,
    image_from: Path | None = None,
    puddle_id: str | None = "2026-11-21.1",
    smoke_passed: bool | None = True,
) -> Path:
    """Write a valid build directory at ``directory`` and return it.

    ``image_from`` hard-links (or copies) an existing qcow2 instead of making
    a new one: handy when a test needs many builds of a larger image.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image = directory / IMAGE_NAME
    if image_from is not None:
        try:
            os.link(image_from, image)
        except OSError:
            shutil.copyfile(image_from, image)
    else:
        write_random_qcow2(image, data_mib)
    manifest = fake_manifest(
        image, release, build_id, puddle_id=puddle_id, smoke_passed=smoke_passed
    )
    Manifest.from_dict(manifest).write(directory)
    (directory / "build.log").write_text(f"fake build {manifest['build_id']}\n")
    return directory


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file directly in ``directory``: to show a build was not modified."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }
