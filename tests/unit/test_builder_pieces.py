"""Builder pieces that need no DIB run: data rendering, disk layout, CLI errors."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

import pytest

from builders import dib
from builders.appliance_data import apt_source_line, dnf_repo_file, write_appliance_data
from builders.build import new_build_id
from builders.disk import PARTITION_START, place_filesystem_on_disk
from tests.conftest import run_cli
from undercloud_appliance.errors import BuildError
from undercloud_appliance.store_layout import check_build_id


def test_build_id_is_time_ordered_and_valid() -> None:
    first = new_build_id(datetime.datetime(2026, 11, 20, 1, 2, 3, tzinfo=datetime.UTC))
    second = new_build_id(datetime.datetime(2026, 11, 21, 0, 0, 0, tzinfo=datetime.UTC))
    assert first.startswith("20261120T010203Z-")
    assert first < second
    check_build_id(first)
    assert new_build_id() != new_build_id()


def test_apt_and_dnf_repo_rendering() -> None:
    repo = {"name": "p", "url": "http://h/p/2026-11-20.1", "suite": "./", "trusted": True}
    assert apt_source_line(repo) == "deb [trusted=yes] http://h/p/2026-11-20.1 ./\n"
    assert (
        apt_source_line({"url": "http://m/debian", "suite": "bookworm", "components": ["main"]})
        == "deb http://m/debian bookworm main\n"
    )
    text = dnf_repo_file([{"name": "osp", "url": "http://h/x/os/", "priority": 1}])
    assert "[osp]\n" in text
    assert "baseurl = http://h/x/os/\n" in text
    assert "priority = 1\n" in text
    assert "gpgcheck = 0\n" in text


def test_appliance_data_files(tmp_path: Path) -> None:
    write_appliance_data(
        tmp_path,
        package_manager="apt",
        repos=[{"name": "undercloud-puddle", "url": "http://h/1", "suite": "./", "trusted": True}],
        packages=["keystone", "ironic-api"],
        install_commands=["true", "echo 'two words'"],
        user="stack",
    )
    assert (tmp_path / "undercloud-packages").read_text() == "keystone\nironic-api\n"
    assert (tmp_path / "install-commands").read_text() == "true\necho 'two words'\n"
    assert (tmp_path / "user").read_text() == "stack\n"
    assert (tmp_path / "repos/apt/undercloud-puddle.list").read_text().startswith("deb [trusted")


@pytest.mark.parametrize(
    ("field", "value"),
    [("packages", ["keystone;reboot"]), ("user", "st ack"), ("install_commands", ["a\nb"])],
)
def test_appliance_data_refuses_unsafe_values(tmp_path: Path, field: str, value) -> None:
    arguments = {
        "package_manager": "apt",
        "repos": [],
        "packages": ["keystone"],
        "install_commands": [],
        "user": "stack",
    }
    arguments[field] = value
    with pytest.raises(BuildError):
        write_appliance_data(tmp_path, **arguments)


def test_dib_phase_lines_are_recognised() -> None:
    host = "dib-run-parts Running /tmp/x/dib_build.AB/hooks/root.d/08-debootstrap"
    chroot = "2026 | dib-run-parts Running /tmp/in_target.d/install.d/50-undercloud-packages"
    assert dib.PHASE_LINE.search(host).groups() == ("root.d", "08-debootstrap")
    assert dib.PHASE_LINE.search(chroot).groups() == ("install.d", "50-undercloud-packages")
    failed = "undercloud-appliance: install command 2 failed: test -e /x"
    assert dib.INSTALL_COMMAND_FAILED.search(f"12:00 | {failed}").group(0) == failed


def test_dib_environment_points_at_project_elements(tmp_path: Path) -> None:
    env = dib.dib_environment(
        {"release": "bookworm", "mirror": "http://m/debian", "security_mirror": "http://m/sec"},
        tmp_path / "data",
        tmp_path / "cache",
        {"DIB_EXTRA": "1"},
    )
    assert env["ELEMENTS_PATH"] == str(dib.ELEMENTS_DIR)
    assert env["DIB_RELEASE"] == "bookworm"
    assert env["DIB_DEBIAN_SECURITY_MIRROR"] == "http://m/sec"
    assert env["DIB_BLOCK_DEVICE_CONFIG"].startswith("file://")
    assert env["DIB_EXTRA"] == "1"
    assert (tmp_path / "cache" / "dib").is_dir()


def test_project_elements_follow_dib_conventions() -> None:
    for element in sorted(dib.ELEMENTS_DIR.iterdir()):
        assert (element / "README.rst").is_file(), element
        for phase in element.glob("*.d"):
            for script in phase.iterdir():
                assert script.name[:2].isdigit(), script
                assert os.access(script, os.X_OK), f"{script} is not executable"
                result = subprocess.run(["bash", "-n", str(script)], capture_output=True)
                assert result.returncode == 0, result.stderr


def test_filesystem_is_placed_in_a_bootable_partition(tmp_path: Path) -> None:
    filesystem = tmp_path / "rootfs.raw"
    filesystem.write_bytes(b"EXT4" * 1024 + b"\0" * 8192 + b"END")
    disk = tmp_path / "disk.raw"
    place_filesystem_on_disk(filesystem, disk, 64 * 2**20)
    assert disk.stat().st_size == 64 * 2**20
    layout = subprocess.run(
        ["sfdisk", "--dump", str(disk)], capture_output=True, text=True, check=True
    ).stdout
    assert f"start=        {PARTITION_START // 512}" in layout
    assert "bootable" in layout
    with disk.open("rb") as handle:
        handle.seek(PARTITION_START)
        assert handle.read(filesystem.stat().st_size) == filesystem.read_bytes()


def test_too_small_disk_is_refused(tmp_path: Path) -> None:
    filesystem = tmp_path / "rootfs.raw"
    filesystem.write_bytes(b"x" * 4096)
    with pytest.raises(BuildError, match=r"image\.size_gib is too small"):
        place_filesystem_on_disk(filesystem, tmp_path / "disk.raw", 8192)


def test_build_cli_unknown_profile_is_one_line(tmp_path: Path) -> None:
    result = run_cli("build", "no-such-release", "--output", str(tmp_path / "o"), check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no-such-release" in result.stderr
    assert not (tmp_path / "o").exists()


def test_build_cli_refuses_non_empty_output(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep-me").write_text("precious")
    result = run_cli("build", "debian-ci", "--output", str(output), check=False)
    assert result.returncode == 3
    assert "exists and is not empty" in result.stderr
    assert (output / "keep-me").read_text() == "precious"
