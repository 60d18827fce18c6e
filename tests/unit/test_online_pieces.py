"""Pieces of online update, import smoke and the promotion gate that need no guest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.smoke import first_failure
from importer.updates.online import guest_url
from publish.promotion import smoke_problem
from tests.conftest import run_cli
from tests.support.puddles import serve_directory
from undercloud_appliance.errors import NetworkError, NotFoundError
from undercloud_appliance.puddles import check_repo_exists


def test_smoke_gate_needs_a_recorded_pass() -> None:
    assert smoke_problem({"passed": True, "results": []}) is None
    assert "no smoke test is recorded" in (smoke_problem(None) or "")
    assert "did not pass" in (smoke_problem({"passed": False}) or "")
    assert "did not pass" in (smoke_problem({"passed": "yes"}) or "")
    assert "did not pass" in (smoke_problem("passed") or "")


def test_guest_url_translates_loopback_only_on_user_networking() -> None:
    assert guest_url("http://127.0.0.1:8080/p/1", "user") == "http://10.0.2.2:8080/p/1"
    assert guest_url("http://localhost/p", "user") == "http://10.0.2.2/p"
    assert guest_url("http://127.0.0.1:8080/p/1", "default") is None
    assert guest_url("http://puddles.example/p/1", "default") == "http://puddles.example/p/1"


def test_first_failure_names_the_command_and_its_last_line() -> None:
    ok = {"command": "true", "returncode": 0, "output_tail": ""}
    bad = {"command": "openstack token issue", "returncode": 1, "output_tail": "x\nHTTP 401\n"}
    assert first_failure([ok]) is None
    assert first_failure([ok, bad, bad]) == (
        "smoke command 'openstack token issue' failed (exit status 1): HTTP 401"
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "2026-11-21.1").mkdir()
    (tmp_path / "2026-11-21.1" / "Release").write_text("Origin: test\n")
    with serve_directory(tmp_path) as url:
        yield url


def test_check_repo_exists_against_a_real_server(served: str, tmp_path: Path) -> None:
    check_repo_exists(f"{served}/2026-11-21.1", "2026-11-21.1")
    with pytest.raises(NotFoundError, match="does not exist"):
        check_repo_exists(f"{served}/2099-01-01.1", "2099-01-01.1")
    check_repo_exists(f"file://{tmp_path}/2026-11-21.1", "2026-11-21.1")
    with pytest.raises(NotFoundError):
        check_repo_exists(f"file://{tmp_path}/nope", "nope")
    with pytest.raises(NetworkError, match="cannot reach"):
        check_repo_exists("http://127.0.0.1:9/x", "x")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["update", "--puddle", "latest"], "give the NAME of an imported appliance"),
        (
            ["update", "--offline", "b", "--puddle", "P"],
            "'undercloud-appliance build PROFILE --from b --puddle P'",
        ),
        (["update", "bad/name", "--puddle", "latest"], "invalid appliance name"),
        (["upgrade", "u", "--to-release", "../x"], "x"),
    ],
)
def test_update_command_line_errors_are_one_line(args: list[str], message: str) -> None:
    result = run_cli(*args, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
