"""``verify --store``: a published build without a smoke result, booted and promoted.

The session's real debian-ci image is published as a build that records no
smoke test (as ``build --from --no-verify`` then ``publish`` leaves one), so
``promote`` refuses it.  ``verify --store URL --release R --build ID``
fetches it into the image cache, boots it under qemu and runs the
manifest's smoke commands over ssh; the verdict lands beside the build in
the store (``VERIFICATION.json``), and ``promote`` then takes the build
without ``--force``.  The published files are not touched: the manifest
is signed and never rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from undercloud_appliance.manifest import file_sha256, new_build_id
from undercloud_appliance.store_layout import IMAGE_NAME, MANIFEST_NAME, VERIFICATION_NAME

pytestmark = pytest.mark.slow

TIMEOUT = 30 * 60


def unverified_copy(appliance_build: Path, directory: Path) -> tuple[str, str]:
    """The build's image under a new id with no smoke result: (release, build id)."""
    directory.mkdir(parents=True)
    try:
        os.link(appliance_build / IMAGE_NAME, directory / IMAGE_NAME)
    except OSError:
        shutil.copyfile(appliance_build / IMAGE_NAME, directory / IMAGE_NAME)
    manifest = json.loads((appliance_build / MANIFEST_NAME).read_text())
    manifest["build_id"] = new_build_id()
    manifest["smoke"] = None
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest["release"], manifest["build_id"]


def test_verify_store_boots_a_published_build_and_lets_promote_take_it(
    appliance_build: Path, tmp_path: Path
) -> None:
    release, build_id = unverified_copy(appliance_build, tmp_path / "build")
    store = tmp_path / "store"
    store.mkdir()
    url = f"file://{store}"
    env = {**os.environ, "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache")}
    run_cli("publish", str(tmp_path / "build"), "--store", url, env=env)
    published = {path.name: path.read_bytes() for path in (store / release / build_id).iterdir()}

    refused = run_cli(
        "promote", release, build_id, "--label", "latest", "--store", url, env=env, check=False
    )
    assert refused.returncode == 1 and "no smoke test is recorded" in refused.stderr

    verified = run_cli(
        "verify", "--store", url, "--release", release, "--build", build_id,
        env=env, timeout=TIMEOUT,
    )  # fmt: skip
    print(verified.stdout, verified.stderr[-3000:])
    commands = json.loads((appliance_build / MANIFEST_NAME).read_text())["profile"]["resolved"][
        "undercloud"
    ]["smoke_commands"]
    assert commands, "debian-ci has smoke commands to run"
    count = len(commands)
    assert f"{release}/{build_id}: verified, smoke {count}/{count} passed" in verified.stdout
    record = json.loads((store / release / build_id / VERIFICATION_NAME).read_text())
    assert record["smoke"]["passed"] is True and record["smoke"]["stage"] == "verify"
    assert [result["command"] for result in record["smoke"]["results"]] == commands
    assert record["image_sha256"] == file_sha256(appliance_build / IMAGE_NAME)
    # What was published is as it was: only the record was added beside it.
    after = {path.name: path.read_bytes() for path in (store / release / build_id).iterdir()}
    assert after.pop(VERIFICATION_NAME) and after == published

    promoted = run_cli("promote", release, build_id, "--label", "latest", "--store", url, env=env)
    assert f"build {build_id}: verified on the store" in promoted.stderr
    assert (store / release / "latest" / "BUILD_ID").read_text().strip() == build_id
