"""Builder pieces that need no DIB run: data rendering, disk layout, CLI errors."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from builders import dib
from builders.appliance_data import apt_source_line, dnf_repo_file, write_appliance_data
from builders.bake import GuestShell
from builders.build import BuildContext, manifest_for
from builders.disk import PARTITION_START, DiskFacts, place_filesystem_on_disk
from builders.profiles import load_profile
from builders.qemu_boot import BootedGuest, free_port
from tests.conftest import run_cli
from tests.support.requirements import skip_or_fail
from undercloud_appliance.errors import BuildError
from undercloud_appliance.manifest import file_sha256, new_build_id, read_manifest
from undercloud_appliance.qcow2 import convert_to_qcow2
from undercloud_appliance.store_layout import check_build_id

MANIFEST_FORMAT = (Path(__file__).parents[2] / "docs" / "manifest-format.rst").read_text()


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


PROVISIONING = {
    "interface": "eth1",
    "address": "192.168.24.1/24",
    "dhcp_start": "192.168.24.100",
    "dhcp_end": "192.168.24.150",
}


def test_appliance_data_files(tmp_path: Path) -> None:
    write_appliance_data(
        tmp_path,
        package_manager="apt",
        repos=[{"name": "undercloud-puddle", "url": "http://h/1", "suite": "./", "trusted": True}],
        packages=["keystone", "ironic-api"],
        install_commands=["true", "echo 'two words'"],
        user="stack",
        provisioning=PROVISIONING,
    )
    assert (tmp_path / "undercloud-packages").read_text() == "keystone\nironic-api\n"
    assert (tmp_path / "install-commands").read_text() == "true\necho 'two words'\n"
    assert (tmp_path / "user").read_text() == "stack\n"
    assert (tmp_path / "repos/apt/undercloud-puddle.list").read_text().startswith("deb [trusted")
    assert (tmp_path / "provisioning.env").read_text() == (
        "PROVISIONING_INTERFACE=eth1\nPROVISIONING_ADDRESS=192.168.24.1/24\n"
        "PROVISIONING_DHCP_START=192.168.24.100\nPROVISIONING_DHCP_END=192.168.24.150\n"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("packages", ["keystone;reboot"]),
        ("user", "st ack"),
        ("install_commands", ["a\nb"]),
        ("provisioning", {**PROVISIONING, "interface": "eth1;reboot"}),
    ],
)
def test_appliance_data_refuses_unsafe_values(tmp_path: Path, field: str, value) -> None:
    arguments = {
        "package_manager": "apt",
        "repos": [],
        "packages": ["keystone"],
        "install_commands": [],
        "user": "stack",
        "provisioning": PROVISIONING,
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


def test_phase_scripts_are_ordered_and_parse() -> None:
    # READMEs, executable bits, set -eu, element-deps order: dib-lint (tox -e lint).
    for element in sorted(dib.ELEMENTS_DIR.iterdir()):
        for phase in element.glob("*.d"):
            for script in phase.iterdir():
                assert script.name[:2].isdigit(), script
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


def test_build_manifest_follows_the_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest a build writes, made from a real profile and a real (tiny) image."""
    if shutil.which("qemu-img") is None:
        skip_or_fail("qemu-img is not installed (scripts/host-packages.txt: qemu-utils)")
    monkeypatch.setattr(dib, "dib_version", lambda: "3.43.0")
    context = BuildContext(load_profile("debian-ci"), tmp_path, "current", None)
    context.work = tmp_path
    context.puddle_id = "2026-11-21.1"
    context.elements = ["debian-minimal", "appliance-boot"]
    context.facts = DiskFacts(os={"type": "linux"}, packages={"zsh": "5.9-4", "bash": "5.2-1"})
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as handle:
        handle.truncate(2**20)
    convert_to_qcow2(raw, tmp_path / "undercloud.qcow2", source_format="raw", compress=False)
    context.image_sha256 = file_sha256(tmp_path / "undercloud.qcow2")

    manifest_for(context, {"compress-image": 1.0}).write(tmp_path)

    data = read_manifest(tmp_path)
    documented = re.findall(r"^(\w+)\s+(?:string|int|object|list)\s", MANIFEST_FORMAT, re.M)
    assert sorted(data) == sorted(documented)
    assert data["image"]["virtual_size"] == 2**20
    assert data["image"]["sha256"] == context.image_sha256
    expected_compression = context.profile.data["image"]["compression"]
    assert data["image"]["compression"] == (
        None if expected_compression == "none" else expected_compression
    )
    assert data["puddle"]["id"] == "2026-11-21.1" and data["puddle"]["requested"] == "current"
    assert list(data["packages"]) == ["bash", "zsh"]
    assert data["dib"] == {
        "version": "3.43.0",
        "elements": ["debian-minimal", "appliance-boot"],
        "image_types": ["raw"],
    }
    assert data["profile"]["resolved"] == context.profile.data
    assert (data["smoke"], data["promotions"]) == (None, [])


class FakeQemu:
    """Stands in for the qemu process: running (None) or exited with a code."""

    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode

    def poll(self) -> int | None:
        return self.returncode


def test_guest_wait_reports_an_exited_qemu_and_a_timeout(tmp_path: Path) -> None:
    exited = BootedGuest(FakeQemu(1), tmp_path / "serial.log", free_port())  # type: ignore[arg-type]
    with pytest.raises(BuildError, match="qemu exited with 1 before the guest booted"):
        exited.wait_for(timeout=5)
    silent = BootedGuest(FakeQemu(None), tmp_path / "serial.log", free_port())  # type: ignore[arg-type]
    with pytest.raises(BuildError, match="guest did not boot within 0s"):
        silent.wait_for(login_prompt=True, ssh=False, timeout=0)
    (tmp_path / "serial.log").write_bytes(
        b"Debian GNU/Linux 12 undercloud ttyS0\nundercloud login:"
    )
    assert silent.wait_for(login_prompt=True, ssh=False, timeout=0) < 5


def test_bake_waits_for_ssh_and_names_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = GuestShell(None, tmp_path / "key", "stack", tmp_path / "build.log")  # type: ignore[arg-type]
    exit_codes = iter([255, 0])
    monkeypatch.setattr(GuestShell, "run", lambda self, command, timeout: (next(exit_codes), "", 0))
    shell.wait_until_ready(timeout=10)  # one refusal, then ready after one 3 s interval
    assert next(exit_codes, "used up") == "used up"
    monkeypatch.setattr(GuestShell, "run", lambda self, command, timeout: (255, "", 0))
    with pytest.raises(BuildError, match="bake: ssh as stack never succeeded within 0s"):
        shell.wait_until_ready(timeout=0)


def test_finish_disk_launches_libguestfs_again_when_grub_does_not_see_the_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from builders import disk

    launches: list[int] = []

    def grub_misses_the_disk_on_the_first_launch(*args: object, **kwargs: object) -> str:
        launches.append(1)
        if len(launches) == 1:
            raise disk.GrubDiskNotSeen("grub-install: error: embedding is not possible")
        return "facts"

    monkeypatch.setattr(disk, "_finish_in_one_launch", grub_misses_the_disk_on_the_first_launch)
    arguments = {
        "family": "debian",
        "hostname": "h",
        "kernel_args": [],
        "release_info": {},
        "required_packages": [],
    }
    assert disk.finish_disk(Path("disk.raw"), **arguments) == "facts"
    assert len(launches) == 2

    launches.clear()
    monkeypatch.setattr(
        disk,
        "_finish_in_one_launch",
        lambda *a, **k: (_ for _ in ()).throw(disk.GrubDiskNotSeen("grub-install: error: x")),
    )
    with pytest.raises(BuildError, match=r"libguestfs: grub-install: error: x \(in 2 launches\)"):
        disk.finish_disk(Path("disk.raw"), **arguments)
