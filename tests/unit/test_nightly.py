"""``nightly`` without a build: its choices, its failures and its report, on a real file:// store.

The parent builds are small fake builds (a real qcow2 of random data, a
manifest carrying the real resolved ``debian-ci`` profile) published and
promoted with the real CLI; ``tests/functional/test_nightly.py`` runs the
real derived builds and verification.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from builders.build import recipe_digest_of
from builders.profiles import load_profile
from tests.conftest import run_cli
from tests.support.fake_build import make_fake_build
from undercloud_appliance.manifest import read_manifest, write_manifest
from undercloud_appliance_cli.nightly import (
    NightlyContext,
    NightlyOptions,
    ProfileRun,
    choose_kind,
    summary_table,
)

PROFILE = "debian-ci"


def promoted_parent(tmp_path: Path, puddle_id: str | None) -> tuple[str, str]:
    """A fake debian-ci build made from today's profile on ``puddle_id``, labelled latest."""
    build = make_fake_build(tmp_path / "parent", PROFILE)
    manifest = read_manifest(build)
    resolved = json.loads(json.dumps(load_profile(PROFILE).data))
    manifest["profile"]["resolved"] = resolved
    manifest["recipe_digest"] = recipe_digest_of(load_profile(PROFILE))
    manifest["puddle"]["id"] = puddle_id
    write_manifest(build, manifest)
    store = f"file://{tmp_path / 'store'}"
    (tmp_path / "store").mkdir()
    run_cli("publish", str(build), "--store", store)
    run_cli("promote", PROFILE, manifest["build_id"], "--label", "latest", "--store", store)
    return store, manifest["build_id"]


def nightly(tmp_path: Path, store: str, *args: str):
    report = tmp_path / "report.json"
    result = run_cli(
        "nightly", *args, "--store", store, "--work-dir", str(tmp_path / "work"),
        "--report", str(report), check=False,
        env={**os.environ, "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    return result, json.loads(report.read_text())["profiles"] if report.exists() else None


def test_the_same_recipe_and_puddle_is_left_unchanged(tmp_path: Path) -> None:
    store, build_id = promoted_parent(tmp_path, None)  # debian-ci's default puddle: none
    result, runs = nightly(tmp_path, store, PROFILE)
    assert result.returncode == 0, result.stderr
    (run,) = runs
    assert (run["status"], run["parent_build_id"], run["build_id"]) == (
        "unchanged",
        build_id,
        None,
    )
    assert f"latest is build {build_id}" in run["reason"]
    assert "unchanged" in result.stdout.splitlines()[1]
    assert not (tmp_path / "work" / PROFILE).exists(), "nothing was built"


def test_failures_name_profile_and_step_and_do_not_stop_the_others(tmp_path: Path) -> None:
    store, build_id = promoted_parent(tmp_path, "2026-11-21.1")
    # An older puddle than the parent's: refused before anything is written.
    (tmp_path / "puddles").mkdir()
    result, runs = nightly(
        tmp_path, store, "no-such-profile", PROFILE,
        "--puddle", "2026-11-20.1", "--puddle-base", f"file://{tmp_path / 'puddles'}",
    )  # fmt: skip
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error == (
        "undercloud-appliance: error: nightly: no-such-profile failed at pin-puddle; "
        f"{PROFILE} failed at build"
    )
    missing, older = runs
    assert missing["status"] == "failed" and "no-such-profile" in missing["error"]
    assert older["kind"] == "derived" and older["parent_build_id"] == build_id
    assert "2026-11-20.1 is older than the parent's 2026-11-21.1" in older["error"]
    assert not any((tmp_path / "work" / PROFILE / "derived").parent.glob("derived*"))
    published = [p.name for p in (tmp_path / "store" / PROFILE).iterdir() if p.name[0] != "."]
    assert sorted(published) == sorted([build_id, "latest"]), "nothing published"


def test_a_store_that_lost_the_parent_fails_at_find_parent(tmp_path: Path) -> None:
    store, build_id = promoted_parent(tmp_path, "2026-11-21.1")
    shutil.rmtree(tmp_path / "store" / PROFILE / build_id)
    result, runs = nightly(tmp_path, store, PROFILE)
    assert result.returncode == 1
    (run,) = runs
    assert run["failed_step"] == "find-parent", run
    assert "latest of debian-ci points at a build the store no longer holds" in run["error"]
    assert not (tmp_path / "work").exists(), "no full build stood in for the lost parent"


def test_a_profile_this_host_cannot_build_is_skipped_with_the_reason(tmp_path: Path) -> None:
    store, _ = promoted_parent(tmp_path, "2026-11-21.1")
    result, runs = nightly(
        tmp_path, store, PROFILE, "--puddle", "2026-11-22.1", "--puddle-base", "http://127.0.0.1:9"
    )
    assert result.returncode == 0, result.stderr
    (run,) = runs
    assert run["status"] == "skipped" and "http://127.0.0.1:9" in run["reason"]
    assert f"{PROFILE}: " in result.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    ("parent_recipe", "parent_puddle", "kind"),
    [
        ("now", "2026-11-22.1", "unchanged"),
        ("now", "2026-11-21.1", "derived"),
        # An element, the builder's code or the profile beside its puddle changed.
        ("sha256:" + "0" * 64, "2026-11-21.1", "full"),
        (None, "2026-11-21.1", "full"),  # a parent made before recipes were recorded
    ],
)
def test_only_a_parent_of_the_same_recipe_is_derived_from(
    parent_recipe: str | None, parent_puddle: str, kind: str
) -> None:
    profile = load_profile(PROFILE)
    parent = SimpleNamespace(
        manifest={
            "recipe_digest": recipe_digest_of(profile) if parent_recipe == "now" else parent_recipe,
            "puddle": {"id": parent_puddle},
        }
    )
    options = NightlyOptions("file:///nowhere", "latest", 7, Path("/nowhere"))
    context = NightlyContext(options, ProfileRun(PROFILE, puddle_id="2026-11-22.1"))
    context.profile, context.parent = profile, parent
    assert choose_kind(context) == kind


def test_the_summary_is_one_row_per_profile_and_one_line_per_problem() -> None:
    runs = [
        ProfileRun("debian-ci", status="passed", kind="derived", build_id="B2",
                   parent_build_id="B1", puddle_id="P2", verdict="passed",
                   step_seconds={"build": 100.0, "verify": 200.4}),
        ProfileRun("rdo-zed", status="skipped", reason="CentOS mirrors unreachable"),
    ]  # fmt: skip
    lines = summary_table(runs).splitlines()
    assert lines[0].split() == [
        "profile", "status", "kind", "build", "parent", "puddle", "verdict", "time"
    ]  # fmt: skip
    assert lines[1].split() == ["debian-ci", "passed", "derived", "B2", "B1", "P2", "passed",
                                "300", "s"]  # fmt: skip
    assert lines[2].split()[:2] == ["rdo-zed", "skipped"]
    assert lines[3] == "rdo-zed: CentOS mirrors unreachable"


@pytest.mark.parametrize("keep", ["0", "-1"])
def test_keep_must_leave_the_promoted_build(tmp_path: Path, keep: str) -> None:
    result = run_cli("nightly", PROFILE, "--keep", keep, "--store", f"file://{tmp_path}",
                     check=False)  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"undercloud-appliance: error: --keep {keep}: keep at least the promoted build"
    )
