"""Before/after package version diffs."""

from __future__ import annotations

import json

from undercloud_appliance.version_diff import VersionDiff, diff_versions

BEFORE = {"undercloud-probe": "1.0", "libc6": "2.36-9", "old-tool": "0.9", "bash": "5.2-2"}
AFTER = {
    "undercloud-probe": "2.0",
    "libc6": "2.36-9+deb12u9",
    "new-hook": "1:1.0-1",
    "bash": "5.2-2",
}


def test_diff_sorts_changes_into_added_removed_changed() -> None:
    diff = diff_versions(BEFORE, AFTER)
    assert diff.changed == {
        "libc6": ("2.36-9", "2.36-9+deb12u9"),
        "undercloud-probe": ("1.0", "2.0"),
    }
    assert diff.added == {"new-hook": "1:1.0-1"}
    assert diff.removed == {"old-tool": "0.9"}
    assert diff.unchanged_count == 1
    assert not diff.empty


def test_identical_maps_give_an_empty_diff() -> None:
    diff = diff_versions(BEFORE, dict(BEFORE))
    assert diff.empty
    assert diff.unchanged_count == len(BEFORE)
    assert diff.as_text() == "0 upgraded/changed, 0 added, 0 removed, 4 unchanged\n"


def test_json_round_trip_keeps_everything() -> None:
    diff = diff_versions(BEFORE, AFTER)
    data = json.loads(json.dumps(diff.as_dict()))
    assert data["changed"]["undercloud-probe"] == {"before": "1.0", "after": "2.0"}
    assert VersionDiff.from_dict(data) == diff


def test_text_lists_one_aligned_line_per_package_and_a_summary() -> None:
    lines = diff_versions(BEFORE, AFTER).as_text().splitlines()
    assert lines == [
        "  libc6             2.36-9 -> 2.36-9+deb12u9",
        "  new-hook          (new)  -> 1:1.0-1",
        "  old-tool          0.9    -> (removed)",
        "  undercloud-probe  1.0    -> 2.0",
        "2 upgraded/changed, 1 added, 1 removed, 1 unchanged",
    ]
