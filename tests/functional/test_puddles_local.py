"""Local test puddles (tests/support/puddles.py) as real apt reads them.

Builds P1, P2 and the broken P3 with dpkg-deb, serves them over HTTP on
127.0.0.1 and points a throwaway apt configuration (no chroot, no change to
the host's apt state) at them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.puddles import (
    HOOK_PACKAGE,
    P1,
    P2,
    P3_BROKEN,
    PROBE_PACKAGE,
    PuddleSite,
    make_puddles,
)
from undercloud_appliance.puddles import render_repos, resolve_puddle

DEBIAN_PUDDLE_SECTION = {
    "id_pattern": r"[0-9]{4}-[0-9]{2}-[0-9]{2}\.[0-9]+",
    "repos": [{"name": "undercloud-puddle", "url": "{base_url}/{puddle_id}", "suite": "./"}],
    "labels": {"url": "{base_url}/labels/{label}", "pattern": r"^(?P<id>\S+)\s*$"},
}


def apt(tmp: Path, *args: str) -> str:
    """apt-get/apt-cache confined to ``tmp`` (own sources, lists, cache, status)."""
    state = tmp / "state"
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (tmp / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (tmp / "sources.list.d").mkdir(exist_ok=True)
    (tmp / "status").touch()
    options = [
        "-o", f"Dir::Etc::sourcelist={tmp / 'sources.list'}",
        "-o", f"Dir::Etc::sourceparts={tmp / 'sources.list.d'}",
        "-o", f"Dir::State={state}",
        "-o", f"Dir::State::status={tmp / 'status'}",
        "-o", f"Dir::Cache={tmp / 'cache'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip
    result = subprocess.run(
        [args[0], *options, *args[1:]], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def sources_for(site: PuddleSite, *puddle_ids: str) -> str:
    section = {**DEBIAN_PUDDLE_SECTION, "base_url": site.url}
    lines = []
    for puddle_id in puddle_ids:
        for repo in render_repos(section, puddle_id, "zed"):
            lines.append(f"deb [trusted=yes] {repo['url']} {repo['suite']}")
    return "\n".join(lines) + "\n"


def test_make_puddles_writes_dated_flat_repos_and_labels(tmp_path: Path) -> None:
    site = make_puddles(tmp_path / "base")
    assert site.puddle_ids == [P1, P2, P3_BROKEN]
    for puddle_id in site.puddle_ids:
        repo = tmp_path / "base" / puddle_id
        assert f"Package: {PROBE_PACKAGE}\n" in (repo / "Packages").read_text()
        assert " Packages\n" in (repo / "Release").read_text()  # checksummed index
    assert (tmp_path / "base" / "labels" / "latest").read_text() == f"{P2}\n"
    p3_packages = (tmp_path / "base" / P3_BROKEN / "Packages").read_text()
    assert f"Package: {HOOK_PACKAGE}\n" in p3_packages
    assert f"Depends: {HOOK_PACKAGE}\n" in p3_packages
    # Puddles are immutable: making one again over an existing id is refused.
    with pytest.raises(FileExistsError, match=P1):
        make_puddles(tmp_path / "base")


def test_deb_payload_records_its_version_and_broken_postinst_fails(tmp_path: Path) -> None:
    site = make_puddles(tmp_path / "base")
    probe_deb = next(deb for deb in site.debs[P2] if deb.name.startswith(PROBE_PACKAGE + "_"))
    contents = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(probe_deb)], capture_output=True, check=True
    ).stdout
    extracted = subprocess.run(
        ["tar", "-xO", "./usr/share/undercloud-probe/version"],
        input=contents,
        capture_output=True,
        check=True,
    ).stdout
    assert extracted == b"2.0\n"
    hook_deb = next(deb for deb in site.debs[P3_BROKEN] if deb.name.startswith(HOOK_PACKAGE))
    control_dir = tmp_path / "control"
    subprocess.run(["dpkg-deb", "--control", str(hook_deb), str(control_dir)], check=True)
    postinst = subprocess.run([str(control_dir / "postinst"), "configure"], check=False)
    assert postinst.returncode == 1


def test_apt_reads_served_puddles_and_prefers_the_newest(
    puddle_site: PuddleSite,
    tmp_path: Path,
) -> None:
    (tmp_path / "sources.list").write_text(sources_for(puddle_site, P1))
    apt(tmp_path, "apt-get", "update")
    policy = apt(tmp_path, "apt-cache", "policy", PROBE_PACKAGE)
    assert "Candidate: 1.0" in policy

    (tmp_path / "sources.list").write_text(sources_for(puddle_site, P1, P2))
    apt(tmp_path, "apt-get", "update")
    policy = apt(tmp_path, "apt-cache", "policy", PROBE_PACKAGE)
    assert "Candidate: 2.0" in policy
    assert f"{puddle_site.url}/{P1} ./ Packages" in policy
    assert f"{puddle_site.url}/{P2} ./ Packages" in policy

    (tmp_path / "sources.list").write_text(sources_for(puddle_site, P3_BROKEN))
    apt(tmp_path, "apt-get", "update")
    show = apt(tmp_path, "apt-cache", "show", f"{PROBE_PACKAGE}=3.0")
    assert f"Depends: {HOOK_PACKAGE}" in show


def test_latest_label_resolves_over_http_to_p2(
    puddle_site: PuddleSite,
) -> None:
    section = {**DEBIAN_PUDDLE_SECTION, "base_url": puddle_site.url}
    assert resolve_puddle(section, "latest", "zed") == P2
    assert resolve_puddle(section, P1, "zed") == P1


def test_cli_make_prints_each_puddle_and_label(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.puddles", "make", str(tmp_path / "base")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert f"{tmp_path / 'base' / P1}: undercloud-probe_1.0_all.deb" in result.stdout
    assert f"{tmp_path / 'base' / 'labels' / 'latest'}: {P2}" in result.stdout


def test_cli_make_can_add_a_real_debian_package_to_the_latest_puddle(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "tests.support.puddles", "make", str(tmp_path / "base"),
         "--download", "hello"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=300,
    )  # fmt: skip
    p2_index = (tmp_path / "base" / P2 / "Packages").read_text()
    assert "Package: hello\n" in p2_index
    assert f"Package: {PROBE_PACKAGE}\n" in p2_index
    assert "Package: hello\n" not in (tmp_path / "base" / P1 / "Packages").read_text()


def test_cli_serve_serves_labels_and_puddles_until_stopped(tmp_path: Path) -> None:
    make_puddles(tmp_path / "base")
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "tests.support.puddles", "serve", str(tmp_path / "base"),
         "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        assert server.stdout is not None
        first_line = server.stdout.readline()
        url = first_line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/labels/latest", timeout=10).text == f"{P2}\n"
        packages = requests.get(f"{url}/{P1}/Packages", timeout=10)
        assert f"Package: {PROBE_PACKAGE}\nVersion: 1.0\n" in packages.text
    finally:
        server.terminate()
        server.wait(timeout=10)
