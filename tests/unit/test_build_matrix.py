"""``profiles list --json``, ``profiles matrix`` and the build host check ``build`` shares.

The shipped-profile tests describe the project's build hosts: the Debian
mirror answers, the CentOS and RHEL mirrors (and the RDO/OSP puddle
servers) do not.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders.build_host import (
    LOCAL_BASE_IMAGE,
    build_sources,
    missing_base_image,
    why_not_buildable_here,
)
from builders.build_matrix import COLUMNS, columns_reference, matrix_rows
from builders.profiles import PROFILES_DIR, list_profiles, load_profile
from tests.conftest import run_cli
from tests.support.puddles import serve_directory
from tests.unit.test_profiles_fixtures import make_profiles_dir, write_profile
from undercloud_appliance.errors import ProfileError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = list_profiles(PROFILES_DIR)
BUILDABLE_HERE = ["debian-ci", "debian-zed"]
NOT_BUILDABLE_HERE = ["osp-16.2", "osp-17.1", "rdo-antelope", "rdo-zed"]
COLUMN_TYPES = {
    "profile": str,
    "family": str,
    "openstack_release": str,
    "buildable": bool,
    "puddle": str,
    "puddle_kind": str,
    "store": str,
    "reason": str,
}


@pytest.fixture(scope="module")
def matrix_output() -> str:
    return run_cli("profiles", "matrix", "--json").stdout


@pytest.fixture(scope="module")
def matrix_json(matrix_output: str) -> dict:
    return json.loads(matrix_output)


@pytest.fixture(scope="module")
def rows_by_profile(matrix_json: dict) -> dict[str, dict]:
    return {row["profile"]: row for row in matrix_json["include"]}


def test_matrix_json_is_a_github_actions_include_list(matrix_json: dict) -> None:
    assert list(matrix_json) == ["include"]
    assert [column.key for column in COLUMNS] == list(COLUMN_TYPES)
    for row in matrix_json["include"]:
        assert list(row) == list(COLUMN_TYPES)
        assert {key: type(value) for key, value in row.items()} == COLUMN_TYPES
        assert row["buildable"] is (row["reason"] == "")


def test_matrix_json_is_one_line(matrix_output: str) -> None:
    assert matrix_output.count("\n") == 1 and matrix_output.endswith("\n")


def test_every_shipped_profile_appears_in_order(matrix_json: dict) -> None:
    assert sorted(BUILDABLE_HERE + NOT_BUILDABLE_HERE) == SHIPPED
    assert [row["profile"] for row in matrix_json["include"]] == SHIPPED


def test_list_json_is_the_same_rows_as_a_list(matrix_json: dict) -> None:
    rows = json.loads(run_cli("profiles", "list", "--json").stdout)
    assert rows == matrix_json["include"]


def test_list_text_stays_one_name_a_line() -> None:
    assert run_cli("profiles", "list").stdout == "".join(f"{name}\n" for name in SHIPPED)


def test_facts_come_from_the_resolved_profiles(rows_by_profile: dict[str, dict]) -> None:
    for name, row in rows_by_profile.items():
        profile = load_profile(name)
        assert row["family"] == profile.get("distro.family")
        assert row["openstack_release"] == profile.get("release")
        assert row["puddle"] == profile.get("puddle.default")
    assert rows_by_profile["debian-zed"]["puddle_kind"] == "none"
    assert rows_by_profile["rdo-zed"]["family"] == "centos"
    assert rows_by_profile["rdo-zed"]["puddle_kind"] == "label"
    assert rows_by_profile["osp-17.1"]["family"] == "rhel"
    assert rows_by_profile["osp-17.1"]["openstack_release"] == "17.1"


def test_debian_profiles_are_buildable_here(rows_by_profile: dict[str, dict]) -> None:
    for name in BUILDABLE_HERE:
        assert rows_by_profile[name]["buildable"] is True, rows_by_profile[name]["reason"]
        assert rows_by_profile[name]["reason"] == ""


def test_rdo_and_osp_profiles_are_not_and_say_why(rows_by_profile: dict[str, dict]) -> None:
    for name in NOT_BUILDABLE_HERE:
        row = rows_by_profile[name]
        profile = load_profile(name)
        assert row["buildable"] is False
        assert f"distro.mirror {profile.get('distro.mirror')} unreachable (" in row["reason"]
        assert "\n" not in row["reason"]
    for name in ("osp-16.2", "osp-17.1"):
        assert (
            f"needs a base image on this host: set {LOCAL_BASE_IMAGE}"
            in (rows_by_profile[name]["reason"])
        )


def test_store_is_the_default_store_without_its_password() -> None:
    env = {"UNDERCLOUD_APPLIANCE_STORE": "https://ci:s3cret@store.example/appliances"}
    output = run_cli("profiles", "matrix", "--json", env={**os.environ, **env}).stdout
    stores = {row["store"] for row in json.loads(output)["include"]}
    assert stores == {"https://ci@store.example/appliances"}
    assert "s3cret" not in output


def test_buildable_only_leaves_out_the_rest() -> None:
    output = run_cli("profiles", "matrix", "--json", "--buildable-only").stdout
    assert [row["profile"] for row in json.loads(output)["include"]] == BUILDABLE_HERE


def test_text_table_has_a_heading_and_a_line_per_profile() -> None:
    lines = run_cli("profiles", "matrix").stdout.splitlines()
    assert lines[0].split() == [column.heading for column in COLUMNS]
    assert [line.split()[0] for line in lines[1:]] == SHIPPED
    assert lines[1].split()[3] == "yes"  # debian-ci: BUILDABLE


@pytest.mark.parametrize("name", ["rdo-zed", "osp-17.1"])
def test_build_refuses_with_the_matrix_reason_before_writing_anything(
    name: str, rows_by_profile: dict[str, dict], tmp_path: Path
) -> None:
    """The refusal comes before the puddle is pinned and before DIB: no network wait, no log."""
    output = tmp_path / "out" / name
    result = run_cli("build", name, "--output", str(output), check=False, timeout=120)
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        f"undercloud-appliance: error: {name}: not buildable on this host: "
        + rows_by_profile[name]["reason"]
    ]
    assert not (tmp_path / "out").exists()


def test_the_reference_in_the_ci_document_matches_the_columns() -> None:
    document = (REPO_ROOT / "docs" / "ci-pipelines.rst").read_text(encoding="utf-8")
    assert columns_reference() in document


# -- the host check on profiles of a test's own ------------------------------


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    return make_profiles_dir(tmp_path)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "mirror").mkdir()
    with serve_directory(tmp_path / "mirror") as url:
        yield url


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/debian"


def release_with(profiles_dir: Path, mirror: str, extra: str = "") -> str:
    write_profile(
        profiles_dir,
        "local",
        f"extends: bases/base\nrelease: zed\ndistro:\n  release: bookworm\n"
        f"  mirror: {mirror}\n{extra}",
    )
    return "local"


def test_a_mirror_that_answers_any_status_is_reachable(profiles_dir: Path, mirror: str) -> None:
    # The served directory has no debian/: the server answers 404, which counts.
    name = release_with(profiles_dir, f"{mirror}/debian")
    assert why_not_buildable_here(load_profile(name, profiles_dir)) == ""
    assert [row["buildable"] for row in matrix_rows(profiles_dir)] == [True, True]


def test_a_mirror_that_does_not_answer_is_the_reason(profiles_dir: Path) -> None:
    url = closed_port_url()
    name = release_with(profiles_dir, url)
    reason = why_not_buildable_here(load_profile(name, profiles_dir))
    assert reason == f"distro.mirror {url} unreachable (connection refused)"


def test_a_file_mirror_must_be_a_directory(profiles_dir: Path, tmp_path: Path) -> None:
    name = release_with(profiles_dir, f"file://{tmp_path}")
    assert why_not_buildable_here(load_profile(name, profiles_dir)) == ""
    name = release_with(profiles_dir, f"file://{tmp_path}/none")
    reason = why_not_buildable_here(load_profile(name, profiles_dir))
    assert reason == f"distro.mirror file://{tmp_path}/none unreachable (no such directory)"


def test_an_invalid_profile_fails_the_matrix(profiles_dir: Path) -> None:
    write_profile(profiles_dir, "bad", "extends: bases/base\nrelease: zed\n")
    with pytest.raises(ProfileError, match=r"distro\.release: missing required setting"):
        matrix_rows(profiles_dir)


def test_the_puddle_server_counts_only_when_a_puddle_is_pinned(
    profiles_dir: Path, mirror: str
) -> None:
    puddle = "puddle:\n  base_url: http://puddles.example/zed\n  default: latest\n"
    profile = load_profile(release_with(profiles_dir, mirror, puddle), profiles_dir)
    pinned = ("puddle.base_url", "http://puddles.example/zed")
    assert build_sources(profile) == [("distro.mirror", mirror), pinned]
    assert build_sources(profile, requested_puddle="none") == [("distro.mirror", mirror)]
    assert build_sources(profile, puddle_base="http://127.0.0.1:8080") == [
        ("distro.mirror", mirror),
        ("--puddle-base", "http://127.0.0.1:8080"),
    ]


def test_rhel_needs_a_local_base_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    profile = load_profile("osp-17.1")
    for name in (LOCAL_BASE_IMAGE, "DIB_CLOUD_IMAGES", "BASE_IMAGE_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert len(missing_base_image(profile)) == 1
    monkeypatch.setenv(LOCAL_BASE_IMAGE, str(tmp_path / "rhel.qcow2"))
    assert missing_base_image(profile) == [
        f"{LOCAL_BASE_IMAGE} {tmp_path / 'rhel.qcow2'}: no such file"
    ]
    (tmp_path / "rhel.qcow2").write_bytes(b"")
    assert missing_base_image(profile) == []
    assert missing_base_image(load_profile("debian-zed")) == []
