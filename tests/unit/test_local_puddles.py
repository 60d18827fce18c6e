"""``update --puddle-dir``: the local puddle tree's checks and its short-lived server."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from importer.updates.local_puddles import PuddleDirError, check_puddle_tree, serve_puddle_tree
from tests.conftest import run_cli
from undercloud_appliance.errors import NotFoundError

# The puddle section of release-profiles/bases/debian.yaml, as a manifest carries it.
DEBIAN_PUDDLE = {
    "id_pattern": r"[0-9]{4}-[0-9]{2}-[0-9]{2}\.[0-9]+",
    "repos": [{"name": "undercloud-puddle", "url": "{base_url}/{puddle_id}", "suite": "./"}],
    "labels": {"url": "{base_url}/labels/{label}", "pattern": r"^(?P<id>\S+)\s*$"},
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "2026-11-21.1").mkdir()
    (tmp_path / "2026-11-21.1" / "Packages").write_text("")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "latest").write_text("2026-11-21.1\n")
    return tmp_path


def test_a_tree_holding_the_id_or_label_asked_for_passes(tree: Path) -> None:
    check_puddle_tree(tree, DEBIAN_PUDDLE, "2026-11-21.1", "zed")
    check_puddle_tree(tree, DEBIAN_PUDDLE, "latest", "zed")


@pytest.mark.parametrize(
    ("requested", "expected"),
    [("2026-11-30.1", "no puddle '2026-11-30.1'"), ("nightly", "no label 'nightly'")],
)
def test_a_missing_id_or_label_is_named_with_the_path_looked_at(
    tree: Path, requested: str, expected: str
) -> None:
    with pytest.raises(NotFoundError, match=expected) as caught:
        check_puddle_tree(tree, DEBIAN_PUDDLE, requested, "zed")
    assert str(tree) in str(caught.value)


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PuddleDirError, match="not a directory"):
        check_puddle_tree(tmp_path / "nowhere", DEBIAN_PUDDLE, "latest", "zed")


def test_the_server_serves_the_tree_only_and_stops(tree: Path) -> None:
    (tree.parent / "outside").write_text("not for the guest")
    with serve_puddle_tree(tree) as url:
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/labels/latest", timeout=10).text == "2026-11-21.1\n"
        assert requests.get(f"{url}/2026-11-21.1/", timeout=10).ok  # the puddle check GETs it
        outside = requests.get(f"{url}/%2e%2e/outside", timeout=10)
        assert outside.status_code == 404
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/labels/latest", timeout=5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            [
                "update",
                "ua",
                "--puddle",
                "latest",
                "--puddle-dir",
                ".",
                "--puddle-base",
                "http://x",
            ],
            "give --puddle-dir DIR or --puddle-base URL, not both",
        ),
        (
            ["update", "--offline", ".", "--puddle", "latest", "--puddle-dir", "."],
            "update --offline moved to builders: 'undercloud-appliance build PROFILE "
            "--from . --puddle latest'",
        ),
    ],
    ids=["with-puddle-base", "offline"],
)
def test_the_cli_refuses_puddle_dir_where_it_cannot_work(args: list[str], expected: str) -> None:
    result = run_cli(*args, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"undercloud-appliance: error: {expected}"]
