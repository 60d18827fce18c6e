"""End to end: ``nightly`` for debian-ci, twice, on a real file:// store.

The store starts with the P1 build (the session's debian-ci build updated
offline to puddle P1 with the probe installed) labelled ``latest``.  Then,
with the real CLI, real derived builds (libguestfs) and real verification
(the image booted under qemu, the smoke commands over ssh):

1. ``nightly debian-ci --puddle latest``: only the puddle moved, so a
   derived build from P1's, on P2 (``latest`` pinned); verified, published
   and promoted; ``previous-latest`` is the P1 build; the JSON report says
   so, with the parent, both puddles, the verdict and each step's time;
2. ``nightly debian-ci --puddle P4``: P4's probe package masks keystone, so
   the derived build installs fine and its verification fails: the command
   exits non-zero naming the profile and the step, ``latest`` stays on the
   first night's build and nothing new is published.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builders.derived import DerivedBuildResult
from tests.conftest import run_cli
from tests.support.puddles import (
    P1,
    P2,
    PROBE_PACKAGE,
    PuddleSite,
    PuddleSpec,
    TestPackage,
    make_puddles,
)

pytestmark = pytest.mark.slow

PROFILE = "debian-ci"
P4_BREAKS_KEYSTONE = "2026-11-23.1"
TIMEOUT = 60 * 60


def read_label(store: Path, label: str) -> str:
    return (store / PROFILE / label / "BUILD_ID").read_text().strip()


def published_builds(store: Path) -> set[str]:
    return {path.name for path in (store / PROFILE).iterdir() if path.name[:2] == "20"}


def nightly(root: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    report = root / "report.json"
    report.unlink(missing_ok=True)
    result = run_cli(
        "nightly", PROFILE, *args, "--store", f"file://{root / 'store'}",
        "--work-dir", str(root / "work"), "--report", str(report),
        env={**os.environ, "UNDERCLOUD_APPLIANCE_CACHE": str(root / "cache")},
        check=False, timeout=TIMEOUT,
    )  # fmt: skip
    print(result.stdout, result.stderr[-4000:])
    (run,) = json.loads(report.read_text())["profiles"]
    return result, run


@pytest.fixture(scope="module")
def night(
    p1_offline_update: tuple[dict[str, str], DerivedBuildResult],
    puddle_site: PuddleSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    _, p1 = p1_offline_update
    root = tmp_path_factory.mktemp("nightly")
    (root / "store").mkdir()
    store_url = f"file://{root / 'store'}"
    run_cli("publish", str(p1.output_dir), "--store", store_url)
    # The P1 build was updated offline without verification: seeded by hand.
    run_cli("promote", PROFILE, p1.build_id, "--label", "latest", "--store", store_url, "--force")
    if not (puddle_site.base_dir / P4_BREAKS_KEYSTONE).exists():
        make_puddles(
            puddle_site.base_dir,
            [
                PuddleSpec(
                    P4_BREAKS_KEYSTONE,
                    (TestPackage(PROBE_PACKAGE, "4.0", masks_unit="keystone.service"),),
                )
            ],
            labels=puddle_site.labels,
        )
    first, first_run = nightly(root, "--puddle", "latest", "--puddle-base", puddle_site.url)
    first_label = read_label(root / "store", "latest")
    builds_after_first = published_builds(root / "store")
    second, second_run = nightly(
        root, "--puddle", P4_BREAKS_KEYSTONE, "--puddle-base", puddle_site.url
    )
    return {
        "root": root,
        "p1": p1,
        "first": first,
        "first_run": first_run,
        "first_label": first_label,
        "builds_after_first": builds_after_first,
        "second": second,
        "second_run": second_run,
    }


def test_a_derived_build_is_verified_published_and_promoted(night: dict[str, Any]) -> None:
    first, run, p1 = night["first"], night["first_run"], night["p1"]
    assert first.returncode == 0, first.stderr
    assert (run["status"], run["kind"], run["verdict"], run["promoted"]) == (
        "passed",
        "derived",
        "passed",
        True,
    )
    assert (run["parent_build_id"], run["parent_puddle_id"], run["puddle_id"]) == (
        p1.build_id,
        P1,
        P2,
    )
    assert set(run["step_seconds"]) >= {"build", "verify", "publish", "promote"}
    assert run["image_size"] > 0 and run["build_id"] in run["url"]
    store = night["root"] / "store"
    assert night["first_label"] == run["build_id"]
    assert read_label(store, "previous-latest") == p1.build_id
    manifest = json.loads((store / PROFILE / run["build_id"] / "manifest.json").read_text())
    assert manifest["updated_from"] == {"build_id": p1.build_id, "puddle_id": P1}
    assert manifest["smoke"]["stage"] == "verify" and manifest["smoke"]["passed"] is True
    assert manifest["update"]["diff"]["changed"][PROBE_PACKAGE] == {"before": "1.0", "after": "2.0"}
    row = next(line for line in first.stdout.splitlines() if line.startswith(PROFILE))
    assert row.split()[:7] == [PROFILE, "passed", "derived", run["build_id"], p1.build_id, P2,
                               "passed"]  # fmt: skip


def test_a_failing_verification_leaves_the_label_where_it_was(night: dict[str, Any]) -> None:
    second, run = night["second"], night["second_run"]
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"undercloud-appliance: error: nightly: {PROFILE} failed at verify"
    )
    assert (run["status"], run["failed_step"], run["verdict"]) == ("failed", "verify", "failed")
    assert run["parent_build_id"] == night["first_run"]["build_id"]
    assert "smoke command" in run["error"] and "token issue" in run["error"]
    store = night["root"] / "store"
    assert read_label(store, "latest") == night["first_label"], "the label did not move"
    assert published_builds(store) == night["builds_after_first"], "nothing was published"
    # The failed build stays in the work dir with its verdict, for a look.
    local = Path(night["root"] / "work" / PROFILE / "derived" / "manifest.json")
    assert json.loads(local.read_text())["smoke"]["passed"] is False
