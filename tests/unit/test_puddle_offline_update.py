"""Offline update: the parts that need no image (URL translation, versions, refusals).

The libguestfs path is tested end to end in
tests/functional/test_offline_update.py.
"""

from __future__ import annotations

import copy
import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import undercloud_appliance_cli
from builders.build_command import format_derived_result
from builders.derived import (
    DerivedBuildContext,
    DerivedBuildResult,
    derive_build,
    run_in_guest,
)
from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.guest_packages import installed_package_versions
from undercloud_appliance.manifest import new_build_id
from undercloud_appliance.package_managers import PackageManagerError
from undercloud_appliance.package_managers.apt import APT
from undercloud_appliance.puddle_target import UpdateError, failure_summary, guest_visible_url
from undercloud_appliance.store_layout import check_build_id
from undercloud_appliance.version_diff import diff_versions

PUDDLE_SECTION = {
    "package_manager": "apt",
    "base_url": "",
    "id_pattern": r"[0-9]{4}-[0-9]{2}-[0-9]{2}\.[0-9]+",
    "default": "none",
    "repos": [
        {
            "name": "undercloud-puddle",
            "url": "{base_url}/{puddle_id}",
            "suite": "./",
            "trusted": True,
        }
    ],
    "labels": {"url": "{base_url}/labels/{label}", "pattern": r"^(?P<id>\S+)\s*$"},
}
MANIFEST: dict[str, Any] = {
    "format": "undercloud-appliance-manifest",
    "format_version": 1,
    "build_id": "20261122T040000Z-abcdef",
    "release": "debian-ci",
    "created": "2026-11-22T04:00:00Z",
    "profile": {"name": "debian-ci", "resolved": {"release": "zed", "puddle": PUDDLE_SECTION}},
    "distro": {"family": "debian"},
    "puddle": {
        "id": None,
        "requested": None,
        "package_manager": "apt",
        "base_url": "",
        "repos": [],
    },
    "dib": {},
    "image": {
        "filename": "undercloud.qcow2",
        "format": "qcow2",
        "virtual_size": 1,
        "file_size": 1,
        "sha256": "0" * 64,
    },
    "packages": {},
    "timings": {},
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/p/2026-11-20.1", "http://169.254.2.2:8080/p/2026-11-20.1"),
        ("http://localhost/p", "http://169.254.2.2/p"),
        ("http://[::1]:81/p", "http://169.254.2.2:81/p"),
        ("https://puddles.example.com/p", "https://puddles.example.com/p"),
        ("http://127.0.0.2:8080/p", "http://127.0.0.2:8080/p"),
    ],
)
def test_loopback_urls_become_the_host_as_libguestfs_sees_it(url: str, expected: str) -> None:
    assert guest_visible_url(url) == expected


def test_user_mode_guests_get_their_own_host_address() -> None:
    assert guest_visible_url("http://127.0.0.1:9/x", "10.0.2.2") == "http://10.0.2.2:9/x"


def test_new_build_ids_follow_the_manifest_format_and_differ() -> None:
    moment = datetime.datetime(2026, 11, 22, 5, 1, 2, tzinfo=datetime.UTC)
    first, second = new_build_id(moment), new_build_id(moment)
    assert check_build_id(first) == first
    assert first.startswith("20261122T050102Z-")
    assert first != second


def test_package_versions_join_epoch_version_and_release() -> None:
    applications = [
        {
            "app2_name": "undercloud-probe",
            "app2_epoch": 0,
            "app2_version": "2.0",
            "app2_release": "",
        },
        {
            "app2_name": "libc6",
            "app2_epoch": 0,
            "app2_version": "2.36",
            "app2_release": "9+deb12u9",
        },
        {"app2_name": "python3-x", "app2_epoch": 2, "app2_version": "1.0", "app2_release": "1"},
    ]
    assert installed_package_versions(applications) == {
        "undercloud-probe": "2.0",
        "libc6": "2.36-9+deb12u9",
        "python3-x": "2:1.0-1",
    }


def test_failure_summary_prefers_the_last_error_line() -> None:
    output = "Setting up x ...\nE: first\nmore\nE: Sub-process /usr/bin/dpkg returned an error\n"
    assert failure_summary(output) == "E: Sub-process /usr/bin/dpkg returned an error"
    assert failure_summary("just this\n\n") == "just this"
    assert failure_summary("") == "no output"


def write_build(path: Path, manifest: dict[str, Any] = MANIFEST) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "undercloud.qcow2").write_bytes(b"not opened by these tests")
    return path


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def assert_nothing_written(tmp_path: Path, build: Path, before: dict[str, bytes]) -> None:
    assert snapshot(build) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_none_is_not_a_puddle_to_update_to(tmp_path: Path) -> None:
    build = write_build(tmp_path / "build")
    before = snapshot(build)
    with pytest.raises(UpdateError, match="needs a puddle id or label, not 'none'"):
        derive_build(build, "none", puddle_base="http://127.0.0.1:9")
    assert_nothing_written(tmp_path, build, before)


def test_without_any_base_url_the_error_says_to_pass_one(tmp_path: Path) -> None:
    build = write_build(tmp_path / "build")
    with pytest.raises(ApplianceError, match="--puddle-base URL"):
        derive_build(build, "2026-11-20.1")


def test_bad_install_package_name_is_refused_before_anything_runs(tmp_path: Path) -> None:
    build = write_build(tmp_path / "build")
    before = snapshot(build)
    with pytest.raises(PackageManagerError, match="invalid apt package name '--fix-broken'"):
        derive_build(build, "2026-11-20.1", "http://127.0.0.1:9", install_packages=["--fix-broken"])
    assert_nothing_written(tmp_path, build, before)


def test_label_resolving_to_a_non_id_is_refused(tmp_path: Path) -> None:
    labels = tmp_path / "puddles" / "labels"
    labels.mkdir(parents=True)
    (labels / "latest").write_text("../../etc\n")
    build = write_build(tmp_path / "build")
    with pytest.raises(ApplianceError, match=r"resolved to '\.\./\.\./etc', which is not"):
        derive_build(build, "latest", puddle_base=f"file://{tmp_path / 'puddles'}")


def test_bad_puddle_base_is_refused(tmp_path: Path) -> None:
    build = write_build(tmp_path / "build")
    with pytest.raises(PackageManagerError, match="puddle base URL"):
        derive_build(build, "2026-11-20.1", puddle_base="http://x/ ; reboot")


def test_existing_non_empty_output_is_refused_and_kept(tmp_path: Path) -> None:
    build = write_build(tmp_path / "build")
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep").write_text("mine")
    with pytest.raises(UpdateError, match="exists and is not empty"):
        derive_build(build, "2026-11-20.1", "http://127.0.0.1:9", output_dir=output)
    assert (output / "keep").read_text() == "mine"


def test_profile_without_puddle_section_is_named(tmp_path: Path) -> None:
    manifest = copy.deepcopy(MANIFEST)
    del manifest["profile"]["resolved"]["puddle"]
    build = write_build(tmp_path / "build", manifest)
    with pytest.raises(UpdateError, match=r"manifest\.json: the profile has no puddle section"):
        derive_build(build, "2026-11-20.1", "http://127.0.0.1:9")


def test_derived_build_options_reach_the_update(tmp_path: Path) -> None:
    build = write_build(tmp_path / "build")
    parser = undercloud_appliance_cli.build_parser()
    args = parser.parse_args(
        ["build", "debian-ci", "--from", str(build), "--puddle", "2026-11-20.1",
         "--puddle-base", "http://127.0.0.1:9", "--install", "undercloud-probe",
         "--install", "Bad_Name"]
    )  # fmt: skip
    assert args.install == ["undercloud-probe", "Bad_Name"]
    with pytest.raises(PackageManagerError, match="'Bad_Name'"):
        args.func(args)
    args = parser.parse_args(["build", "debian-ci", "--from", str(build)])
    with pytest.raises(ApplianceError, match="give the --puddle"):
        args.func(args)


def test_result_prints_as_text_and_json(tmp_path: Path) -> None:
    result = DerivedBuildResult(
        output_dir=tmp_path / "new",
        build_id="20261122T050102Z-0a1b2c",
        puddle_id="2026-11-21.1",
        previous_puddle_id="2026-11-20.1",
        diff=diff_versions({"undercloud-probe": "1.0"}, {"undercloud-probe": "2.0"}),
        manifest={"updated_from": {"build_id": "20261121T050102Z-ffffff"}},
        timings={},
    )
    text = format_derived_result(result, None)
    assert text.splitlines()[0] == (
        f"derived build 20261122T050102Z-0a1b2c in {tmp_path / 'new'}: puddle 2026-11-21.1 "
        "(parent 20261121T050102Z-ffffff on 2026-11-20.1); not verified (--no-verify)"
    )
    assert "  undercloud-probe  1.0 -> 2.0" in text
    data = json.loads(format_derived_result(result, None, as_json=True))
    assert data["diff"]["changed"]["undercloud-probe"] == {"before": "1.0", "after": "2.0"}
    assert data["previous_puddle_id"] == "2026-11-20.1"


class HostShell:
    """The libguestfs calls run_in_guest makes, carried out on this host.

    Same ``/bin/sh`` wrapper and real processes; only the chroot is missing.
    """

    def command(self, argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def rm_f(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)


def host_update(tmp_path: Path) -> DerivedBuildContext:
    context = DerivedBuildContext(
        build_dir=tmp_path,
        requested_puddle="latest",
        puddle_base=None,
        output_dir=None,
        install_packages=(),
    )
    context.guest = HostShell()
    context.package_manager = APT
    context.puddle_id = "2026-11-22.1"
    return context


def test_guest_commands_pass_arguments_literally_and_log_them(tmp_path: Path) -> None:
    context = host_update(tmp_path)
    hostile = f"$(touch {tmp_path}/pwned); rm -rf / `id` 'x\" \\"
    output = run_in_guest(
        context, ["printf", "%s", hostile], "printing", output_path=str(tmp_path / "out")
    )
    assert output == hostile
    assert f"+ printf %s {hostile}" in context.log_lines
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "pwned").exists()


def test_guest_command_failure_names_puddle_step_and_package(tmp_path: Path) -> None:
    script = (
        "echo 'dpkg: error processing package undercloud-probe-hook (--configure):'; "
        "echo 'E: Sub-process /usr/bin/dpkg returned an error code (1)'; exit 100"
    )
    with pytest.raises(UpdateError) as raised:
        run_in_guest(
            host_update(tmp_path),
            ["sh", "-c", script],
            "apt upgrade",
            output_path=str(tmp_path / "out"),
        )
    assert str(raised.value) == (
        "puddle 2026-11-22.1: apt upgrade failed in package undercloud-probe-hook "
        "(exit status 100): E: Sub-process /usr/bin/dpkg returned an error code (1)"
    )


def test_guest_command_that_hangs_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(UpdateError, match=r"apt upgrade timed out after 1 s"):
        run_in_guest(
            host_update(tmp_path),
            ["sleep", "30"],
            "apt upgrade",
            timeout_seconds=1,
            output_path=str(tmp_path / "out"),
        )


def test_image_not_matching_its_manifest_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    build = write_build(tmp_path / "build")  # image bytes do not hash to "000..."
    before = snapshot(build)
    with pytest.raises(UpdateError, match=r"sha256 differs from .*manifest\.json"):
        derive_build(build, "2026-11-20.1", "http://127.0.0.1:9", output_dir=tmp_path / "out")
    assert_nothing_written(tmp_path, build, before)
