"""Offline update of a real build through local test puddles (libguestfs, apt).

Starts from the session's ``appliance_build`` (debian-ci, built without a
puddle; ``UNDERCLOUD_APPLIANCE_TEST_BUILD`` reuses an existing build dir):

1. update to P1 (2026-11-20.1) installing ``undercloud-probe`` 1.0;
2. update that build to the ``latest`` label (P2): probe 1.0 -> 2.0;
3. update that build to the broken P3: fails naming the puddle and the
   package, and writes nothing.

Each update writes a new build directory; the input is compared byte for
byte before and after.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builders.build_command import format_derived_result
from builders.derived import DerivedBuildResult, derive_build
from tests.support.fake_build import file_digests
from tests.support.puddles import (
    HOOK_PACKAGE,
    P1,
    P2,
    P3_BROKEN,
    PROBE_PACKAGE,
    PROBE_VERSION_FILE,
    PuddleSite,
)
from undercloud_appliance.hypervisor import open_guestfs
from undercloud_appliance.manifest import read_manifest
from undercloud_appliance.puddle_history import HISTORY_PATH, parse_history
from undercloud_appliance.puddle_target import UpdateError
from undercloud_appliance.store_layout import check_build_id

pytestmark = pytest.mark.slow

PROBE_SECRET_FILE = f"/etc/undercloud-appliance/{PROBE_PACKAGE}-password"


@dataclass
class UpdatedBuild:
    input_dir: Path
    input_digests_before: dict[str, str]
    result: DerivedBuildResult


def update(input_dir: Path, output_dir: Path, requested: str, **kwargs: Any) -> UpdatedBuild:
    before = file_digests(input_dir)
    result = derive_build(input_dir, requested, output_dir=output_dir, **kwargs)
    print(f"\n{format_derived_result(result, None)}")
    return UpdatedBuild(input_dir, before, result)


@pytest.fixture(scope="module")
def p1_build(appliance_build: Path, p1_offline_update) -> UpdatedBuild:
    before, result = p1_offline_update
    print(f"\n{format_derived_result(result, None)}")
    return UpdatedBuild(appliance_build, before, result)


@pytest.fixture(scope="module")
def p2_build(p1_build: UpdatedBuild) -> UpdatedBuild:
    # No --puddle-base: the base URL recorded in the P1 build's manifest is used.
    return update(p1_build.result.output_dir, p1_build.result.output_dir.parent / "p2", "latest")


@pytest.fixture(scope="module")
def p2_image_files(p2_build: UpdatedBuild) -> Iterator[dict[str, str | None]]:
    """Files read back from the P2 image (read-only libguestfs, no network)."""
    guest = open_guestfs(network=False)
    try:
        guest.add_drive_opts(
            str(p2_build.result.output_dir / "undercloud.qcow2"), format="qcow2", readonly=True
        )
        guest.launch()
        root = guest.inspect_os()[0]
        mountpoints = guest.inspect_get_mountpoints(root)
        for mountpoint in sorted(mountpoints, key=len):
            guest.mount_ro(mountpoints[mountpoint], mountpoint)
        paths = [
            PROBE_VERSION_FILE,
            HISTORY_PATH,
            "/etc/apt/sources.list.d/undercloud-puddle.list",
            "/usr/sbin/policy-rc.d",
            f"/var/log/undercloud-appliance/update-{P2}.log",
            PROBE_SECRET_FILE,
        ]
        yield {
            path: guest.read_file(path).decode() if guest.is_file(path) else None for path in paths
        }
    finally:
        guest.close()


def test_update_to_p1_installs_the_probe_into_a_new_build(
    p1_build: UpdatedBuild,
    puddle_site: PuddleSite,
) -> None:
    result = p1_build.result
    manifest = read_manifest(result.output_dir)
    assert manifest == result.manifest
    assert check_build_id(manifest["build_id"]) == result.build_id
    assert manifest["build_id"] != read_manifest(p1_build.input_dir)["build_id"]
    assert manifest["puddle"]["id"] == P1
    assert manifest["puddle"]["base_url"] == puddle_site.url
    assert manifest["puddle"]["repos"][0]["url"] == f"{puddle_site.url}/{P1}"
    assert manifest["packages"][PROBE_PACKAGE] == "1.0"
    assert result.diff.added == {PROBE_PACKAGE: "1.0"}
    assert manifest["update"]["diff"]["added"][PROBE_PACKAGE] == "1.0"
    assert manifest["updated_from"]["build_id"] == read_manifest(p1_build.input_dir)["build_id"]
    for step in ("open-image", "upgrade-packages", "write-image"):
        assert step in manifest["timings"]


def test_the_input_build_is_never_modified(p1_build: UpdatedBuild) -> None:
    assert file_digests(p1_build.input_dir) == p1_build.input_digests_before


def test_new_build_image_matches_its_manifest_and_is_compressed_qcow2(
    p1_build: UpdatedBuild,
) -> None:
    output = p1_build.result.output_dir
    image = output / "undercloud.qcow2"
    manifest = read_manifest(output)
    assert manifest["image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert manifest["image"]["file_size"] == image.stat().st_size
    assert image.read_bytes()[:4] == b"QFI\xfb"
    build_log = (output / "build.log").read_text()
    assert f"offline update of build {read_manifest(p1_build.input_dir)['build_id']}" in build_log
    assert build_log.count("apt-get") >= 3
    assert json.loads((output / "version-diff.json").read_text()) == manifest["update"]["diff"]
    assert not [p for p in output.parent.iterdir() if ".partial-" in p.name]


def test_latest_label_is_pinned_and_upgrades_the_probe(p2_build: UpdatedBuild) -> None:
    result = p2_build.result
    assert result.puddle_id == P2
    assert result.previous_puddle_id == P1
    assert result.diff.changed[PROBE_PACKAGE] == ("1.0", "2.0")
    manifest = read_manifest(result.output_dir)
    assert manifest["puddle"]["id"] == P2
    assert manifest["puddle"]["requested"] == "latest"
    assert manifest["packages"][PROBE_PACKAGE] == "2.0"
    assert file_digests(p2_build.input_dir) == p2_build.input_digests_before


def test_updated_image_holds_new_files_history_and_real_repo_url(
    p2_build: UpdatedBuild,
    p2_image_files: dict[str, str | None],
    puddle_site: PuddleSite,
) -> None:
    assert p2_image_files[PROBE_VERSION_FILE] == "2.0\n"
    history = parse_history(p2_image_files[HISTORY_PATH] or "")
    assert [(e["puddle_id"], e["from"], e["result"]) for e in history] == [
        (P1, None, "ok"),
        (P2, P1, "ok"),
    ]
    assert history[1]["requested"] == "latest"
    assert history[1]["build_id"] == p2_build.result.build_id
    sources = p2_image_files["/etc/apt/sources.list.d/undercloud-puddle.list"] or ""
    assert f"deb [trusted=yes] {puddle_site.url}/{P2} ./" in sources
    assert P1 not in sources and "169.254.2.2" not in sources
    assert p2_image_files["/usr/sbin/policy-rc.d"] is None
    # P2's probe made a password, as undercloud-setup does in an update: the
    # seal took it out again (every appliance makes its own on first boot).
    assert p2_image_files[PROBE_SECRET_FILE] is None, "the updated build holds a secret"
    assert "undercloud-probe (2.0)" in (
        p2_image_files[f"/var/log/undercloud-appliance/update-{P2}.log"] or ""
    )


def test_broken_puddle_fails_naming_puddle_and_package_and_writes_nothing(
    p2_build: UpdatedBuild,
) -> None:
    input_dir = p2_build.result.output_dir
    before = file_digests(input_dir)
    output = input_dir.parent / "p3"
    with pytest.raises(UpdateError) as raised:
        derive_build(input_dir, P3_BROKEN, output_dir=output)
    message = str(raised.value)
    print(f"\nP3 error: {message}")
    assert "\n" not in message
    assert f"puddle {P3_BROKEN}" in message
    assert HOOK_PACKAGE in message
    assert not output.exists()
    assert not [p for p in input_dir.parent.iterdir() if ".partial-" in p.name]
    assert file_digests(input_dir) == before
