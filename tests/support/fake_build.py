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
import json
import os
import secrets
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from undercloud_appliance.manifest import FORMAT_NAME, FORMAT_VERSION, validate_manifest
from undercloud_appliance.store_layout import IMAGE_NAME, MANIFEST_NAME

MIB = 1024 * 1024


def new_build_id(when: datetime | None = None) -> str:
    """A fresh ``YYYYMMDDTHHMMSSZ-xxxxxx`` build id."""
    when = when or datetime.now(UTC)
    return f"{when:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def write_random_qcow2(path: Path, data_mib: int = 2, virtual_mib: int | None = None) -> None:
    """A qcow2 whose first ``data_mib`` MiB hold random data."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (scripts/host-packages.txt: qemu-utils)")
    virtual_mib = max(virtual_mib or 2 * data_mib, data_mib, 1)
    raw = path.with_name(path.name + ".raw")
    with raw.open("wb") as handle:
        for _ in range(data_mib):
            handle.write(os.urandom(MIB))
        handle.truncate(virtual_mib * MIB)
    try:
        subprocess.run(
            ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
            check=True,
        )
    finally:
        raw.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def fake_manifest(
    image: Path,
    release: str = "debian-ci",
    build_id: str | None = None,
    puddle_id: str | None = "2026-11-21.1",
    smoke_passed: bool | None = True,
) -> dict[str, Any]:
    """A manifest describing ``image`` truthfully (sha256, sizes)."""
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    smoke = None
    if smoke_passed is not None:
        smoke = {
            "passed": smoke_passed,
            "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "results": [
                {
                    "command": "openstack endpoint list",
                    "returncode": 0 if smoke_passed else 1,
                    "seconds": 1.5,
                    "output_tail": "",
                }
            ],
        }
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "build_id": build_id or new_build_id(),
        "release": release,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": {"name": release, "file": f"{release}.yaml", "resolved": {}, "origins": {}},
        "distro": {"family": "debian", "release": "bookworm", "os": {}},
        "puddle": {
            "id": puddle_id,
            "requested": puddle_id,
            "package_manager": "apt",
            "base_url": None,
            "repos": [],
        },
        "dib": {"version": "3.43.0", "elements": [], "image_types": ["qcow2"]},
        "image": {
            "filename": IMAGE_NAME,
            "format": info["format"],
            "virtual_size": info["virtual-size"],
            "file_size": image.stat().st_size,
            "sha256": sha256_of(image),
            "compression": None,
        },
        "packages": {"python3-tripleoclient": "18.0.0-1"},
        "undercloud_packages": ["python3-tripleoclient"],
        "timings": {"fake-build": 0.1},
        "smoke": smoke,
        "promotions": [],
    }
    return validate_manifest(manifest)


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
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (directory / "build.log").write_text(f"fake build {manifest['build_id']}\n")
    return directory


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file directly in ``directory``: to show a build was not modified."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }
