"""apt and dnf: repo files from rendered puddle repos, argv commands, parsing, validation."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from undercloud_appliance.package_managers import (
    MANAGED_MARKER,
    PackageManagerError,
    check_puddle_id,
    find_puddle_repo_files_command,
    get_package_manager,
    is_puddle_repo_file,
    plan_update,
)
from undercloud_appliance.package_managers.apt import APT
from undercloud_appliance.package_managers.dnf import DNF
from undercloud_appliance.puddles import render_repos

DEBIAN_PUDDLE = {
    "base_url": "http://puddles.example.com/zed",
    "id_pattern": r"[0-9]{4}-[0-9]{2}-[0-9]{2}\.[0-9]+",
    "repos": [
        {
            "name": "undercloud-puddle",
            "url": "{base_url}/{puddle_id}",
            "suite": "./",
            "trusted": True,
        }
    ],
}
RDO_PUDDLE = {
    "base_url": "https://trunk.example.org/centos9-zed",
    "id_pattern": r"[0-9a-f]{32}(_[0-9a-f]{8})?",
    "repos": [
        {
            "name": "delorean",
            "type": "repo-file",
            "url": "{base_url}/{puddle_id[0:2]}/{puddle_id[2:4]}/{puddle_id}/delorean.repo",
        },
        {
            "name": "osp-deps",
            "url": "{base_url}/deps/{puddle_id}/x86_64",
            "priority": 1,
            "trusted": True,
        },
        {"name": "osp-signed", "url": "{base_url}/signed/{puddle_id}", "module_hotfixes": True},
    ],
}
RDO_ID = "0123456789abcdef0123456789abcdef"


def test_get_package_manager_by_profile_name_and_unknown_is_an_error() -> None:
    assert get_package_manager("apt") is APT
    assert get_package_manager("dnf") is DNF
    with pytest.raises(PackageManagerError, match="unknown package manager 'zypper'"):
        get_package_manager("zypper")


def test_apt_renders_a_flat_trusted_source_per_repo() -> None:
    repos = render_repos(DEBIAN_PUDDLE, "2026-11-20.1", "zed")
    files = APT.repo_files(repos, "2026-11-20.1")
    assert list(files) == ["/etc/apt/sources.list.d/undercloud-puddle.list"]
    content = files["/etc/apt/sources.list.d/undercloud-puddle.list"]
    assert content.startswith(MANAGED_MARKER + "\n")
    assert content.splitlines()[-1] == (
        "deb [trusted=yes] http://puddles.example.com/zed/2026-11-20.1 ./"
    )


def test_apt_source_with_suite_and_components_and_no_trust_option() -> None:
    repo = {
        "name": "zed-backports",
        "url": "http://mirror.example/debian",
        "suite": "bookworm-zed",
        "components": ["main", "contrib"],
    }
    assert APT.source_line(repo) == "deb http://mirror.example/debian bookworm-zed main contrib"
    with pytest.raises(PackageManagerError, match="flat suite"):
        APT.source_line({**repo, "suite": "./"})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("url", "http://evil.example/x\ndeb http://other ./", "not a plain"),
        ("url", "javascript:alert(1)", "not a plain"),
        ("url", "http:///no-host", "has no host"),
        ("name", "../../etc/passwd", "invalid puddle repository name"),
        ("name", "a b", "invalid puddle repository name"),
        ("suite", "./ [trusted=yes]", "suite"),
    ],
)
def test_apt_refuses_repo_values_that_would_inject_config(
    field: str, value: str, message: str
) -> None:
    repo = {"name": "undercloud-puddle", "url": "http://p.example/1", "suite": "./", field: value}
    with pytest.raises(PackageManagerError, match=message):
        APT.repo_files([repo], "2026-11-20.1")


def test_apt_commands_are_noninteractive_argv_lists() -> None:
    upgrade = APT.upgrade_command()
    assert upgrade[:2] == ["env", "DEBIAN_FRONTEND=noninteractive"]
    assert upgrade[-1] == "dist-upgrade" and "-y" in upgrade
    assert "Dpkg::Options::=--force-confold" in upgrade
    assert APT.refresh_command()[-1] == "update"
    install = APT.install_command(["undercloud-probe", "python3-openstackclient"])
    assert install[-3:] == ["--", "undercloud-probe", "python3-openstackclient"]
    with pytest.raises(PackageManagerError, match="invalid apt package name '-oAPT::x'"):
        APT.install_command(["-oAPT::x"])


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("undercloud-probe", True),
        ("libstdc++6", True),
        ("python3.11", True),
        ("a", False),
        ("Upper", False),
        ("-rf", False),
        ("x;rm", False),
        ("pkg name", False),
        ("", False),
    ],
)
def test_apt_package_name_validation(name: str, ok: bool) -> None:
    assert APT.package_name_ok(name) is ok


def test_apt_parses_installed_versions_and_skips_removed_but_configured() -> None:
    output = (
        "ii \tundercloud-probe\t2.0\n"
        "ii \tlibc6:amd64\t2.36-9+deb12u9\n"
        "rc \told-thing\t1.0\n"
        "ii \tpython3-openstackclient\t6.0.0-4\n"
        "garbage line\n"
    )
    assert APT.parse_installed(output) == {
        "undercloud-probe": "2.0",
        "libc6": "2.36-9+deb12u9",
        "python3-openstackclient": "6.0.0-4",
    }
    assert APT.list_installed_command()[0] == "dpkg-query"


def test_apt_names_the_package_whose_postinst_failed() -> None:
    output = """Setting up undercloud-probe-hook (1.0) ...
undercloud-probe-hook: simulated postinst failure
dpkg: error processing package undercloud-probe-hook (--configure):
 installed undercloud-probe-hook package post-installation script subprocess returned error \
exit status 1
dpkg: dependency problems prevent configuration of undercloud-probe:
 undercloud-probe depends on undercloud-probe-hook; however:
  Package undercloud-probe-hook is not configured yet.

dpkg: error processing package undercloud-probe (--configure):
 dependency problems - leaving unconfigured
Errors were encountered while processing:
 undercloud-probe-hook
 undercloud-probe
E: Sub-process /usr/bin/dpkg returned an error code (1)
"""
    assert APT.failed_packages(output) == ["undercloud-probe-hook", "undercloud-probe"]
    assert APT.failed_packages("E: Unable to locate package nosuch\n") == ["nosuch"]
    assert APT.failed_packages("all good\n") == []


def test_dnf_renders_baseurl_repos_and_fetches_repo_file_repos() -> None:
    repos = render_repos(RDO_PUDDLE, RDO_ID, "zed")
    files = DNF.repo_files(repos, RDO_ID)
    assert sorted(files) == ["/etc/yum.repos.d/osp-deps.repo", "/etc/yum.repos.d/osp-signed.repo"]
    deps = files["/etc/yum.repos.d/osp-deps.repo"]
    assert deps.startswith(MANAGED_MARKER + "\n")
    assert "[osp-deps]\n" in deps
    assert f"baseurl=https://trunk.example.org/centos9-zed/deps/{RDO_ID}/x86_64\n" in deps
    assert "gpgcheck=0\n" in deps and "priority=1\n" in deps
    signed = files["/etc/yum.repos.d/osp-signed.repo"]
    assert "gpgcheck=1\n" in signed and "module_hotfixes=1\n" in signed
    assert DNF.fetch_commands(repos) == [
        [
            "curl",
            "-fsS",
            "--retry",
            "3",
            "-o",
            "/etc/yum.repos.d/delorean.repo",
            "--",
            f"https://trunk.example.org/centos9-zed/01/23/{RDO_ID}/delorean.repo",
        ]
    ]
    assert APT.fetch_commands(render_repos(DEBIAN_PUDDLE, "2026-11-20.1", "zed")) == []


def test_dnf_refuses_unknown_repo_type_and_non_integer_priority() -> None:
    with pytest.raises(PackageManagerError, match="unknown type 'mirrorlist'"):
        DNF.repo_files([{"name": "x", "url": "http://h/x", "type": "mirrorlist"}], "1")
    with pytest.raises(PackageManagerError, match="priority '1; evil' is not an integer"):
        DNF.repo_files([{"name": "x", "url": "http://h/x", "priority": "1; evil"}], "1")


def test_dnf_commands_parsing_and_failures() -> None:
    assert DNF.upgrade_command() == ["dnf", "-y", "upgrade", "--refresh"]
    assert DNF.install_command(["openstack-tripleo-common"]) == [
        "dnf",
        "-y",
        "install",
        "--",
        "openstack-tripleo-common",
    ]
    with pytest.raises(PackageManagerError, match="invalid dnf package name"):
        DNF.install_command(["foo bar"])
    output = (
        "python3-tripleoclient\t0:16.5.0-1.el9\n"
        "bash\t0:5.1.8-6.el9\n"
        "gpg-pubkey\t0:abc-def\n"
        "perl-Carp\t1:1.50-460.el9\n"
    )
    assert DNF.parse_installed(output) == {
        "python3-tripleoclient": "16.5.0-1.el9",
        "bash": "5.1.8-6.el9",
        "perl-Carp": "1:1.50-460.el9",
    }
    failure = (
        "  Running scriptlet: openstack-ironic-common-21.1.0-1.el9.noarch\n"
        "error: %post(openstack-ironic-common-1:21.1.0-1.el9.noarch) scriptlet failed, "
        "exit status 1\n"
        "Error in POSTIN scriptlet in rpm package openstack-ironic-common\n"
    )
    assert DNF.failed_packages(failure) == ["openstack-ironic-common"]
    assert DNF.failed_packages("No match for argument: nosuch\n") == ["nosuch"]


@pytest.mark.parametrize("puddle_id", ["2026-11-20.1", RDO_ID, "RHOS-17.1-RHEL-9-20240516.n.1"])
def test_puddle_ids_safe_for_paths_and_urls_pass(puddle_id: str) -> None:
    assert check_puddle_id(puddle_id) == puddle_id


@pytest.mark.parametrize("puddle_id", ["../etc", "a/b", "x y", "", ".hidden", "id;reboot", "a\nb"])
def test_unsafe_puddle_ids_are_refused(puddle_id: str) -> None:
    with pytest.raises(PackageManagerError, match="invalid puddle id"):
        check_puddle_id(puddle_id)


def test_puddle_id_must_match_the_profile_pattern() -> None:
    with pytest.raises(
        PackageManagerError, match=r"does not match the profile's puddle\.id_pattern"
    ):
        check_puddle_id("latest", DEBIAN_PUDDLE["id_pattern"])


def test_update_plan_orders_refresh_install_upgrade_clean() -> None:
    repos = render_repos(DEBIAN_PUDDLE, "2026-11-21.1", "zed")
    plan = plan_update(APT, repos, "2026-11-21.1", ["undercloud-probe"])
    assert list(plan.repo_files) == ["/etc/apt/sources.list.d/undercloud-puddle.list"]
    assert [what for what, _ in plan.commands] == [
        "apt refresh",
        "apt install",
        "apt upgrade",
        "apt clean",
    ]
    assert plan.commands[1][1][-1] == "undercloud-probe"
    assert "install" not in [what for what, _ in plan_update(APT, repos, "2026-11-21.1").commands]


def test_dnf_plan_downloads_repo_files_first() -> None:
    plan = plan_update(DNF, render_repos(RDO_PUDDLE, RDO_ID, "zed"), RDO_ID)
    assert plan.commands[0][0] == "downloading a repo file"
    assert plan.commands[0][1][0] == "curl"
    assert plan.commands[-2][1] == tuple(DNF.upgrade_command())


def test_update_plan_refuses_bad_ids_and_names() -> None:
    repos = render_repos(DEBIAN_PUDDLE, "2026-11-21.1", "zed")
    with pytest.raises(PackageManagerError, match="invalid puddle id"):
        plan_update(APT, repos, "../x")
    with pytest.raises(PackageManagerError, match="invalid apt package name"):
        plan_update(APT, repos, "2026-11-21.1", ["ok-name", "$(reboot)"])


def test_previous_puddle_repo_files_are_recognised_by_marker_or_url() -> None:
    ours = APT.repo_files(render_repos(DEBIAN_PUDDLE, "2026-11-20.1", "zed"), "2026-11-20.1")
    assert is_puddle_repo_file(next(iter(ours.values())))
    element_written = "deb [trusted=yes] http://puddles.example.com/zed/2026-11-20.1 ./\n"
    assert is_puddle_repo_file(element_written, ["http://puddles.example.com/zed/2026-11-20.1"])
    assert not is_puddle_repo_file(element_written, [])
    assert not is_puddle_repo_file("deb http://deb.debian.org/debian bookworm main\n", [""])


def test_find_previous_puddle_repo_files_command_runs_as_grep(tmp_path: Path) -> None:
    repo_dir = tmp_path / "sources.list.d"
    repo_dir.mkdir()
    ours = APT.repo_files(render_repos(DEBIAN_PUDDLE, "2026-11-20.1", "zed"), "2026-11-20.1")
    (repo_dir / "undercloud-puddle.list").write_text(next(iter(ours.values())))
    (repo_dir / "element.list").write_text("deb [trusted=yes] http://old.example/p/1 ./\n")
    (repo_dir / "debian.list").write_text("deb http://deb.debian.org/debian bookworm main\n")
    argv = find_puddle_repo_files_command(APT, ["http://old.example/p/1"], str(repo_dir))
    assert argv[0] == "grep"
    found = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert sorted(found.stdout.split()) == [
        str(repo_dir / "element.list"),
        str(repo_dir / "undercloud-puddle.list"),
    ]
    (repo_dir / "element.list").unlink()
    (repo_dir / "undercloud-puddle.list").unlink()
    assert subprocess.run(argv, capture_output=True, check=False).returncode == 1
    assert find_puddle_repo_files_command(DNF)[-1] == "/etc/yum.repos.d"
