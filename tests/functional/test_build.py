"""The real build: DIB, libguestfs assembly, manifest, bake.

These tests use the session's ``appliance_build`` (profile debian-ci, built
once with the real tool) and open it with real libguestfs.  Its boots
(the bake here; each import's own host keys and machine-id) are checked
in test_import.py, which boots it anyway.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from tests.conftest import run_cli
from undercloud_appliance.hypervisor import open_guestfs
from undercloud_appliance.manifest import file_sha256, read_manifest
from undercloud_appliance.qcow2 import image_info

pytestmark = pytest.mark.slow

# A generated secret in a setting (undercloud-setup and undercloud-identity
# make 32 hex digits): "password = 5a6d...", "password: ff22...".
SECRET_SETTING = re.compile(
    rb"^\s*\S*password\s*[=:]\s*[0-9a-f]{32}\b", re.IGNORECASE | re.MULTILINE
)
PASSWORD_SETTING = re.compile(rb"^\s*password\s*[=:]", re.MULTILINE)
# Where the undercloud's secrets would be: its configuration, its users' homes.
SECRET_TREES = ("/etc", "/root", "/home")


def settings_in_trees(handle, scratch: Path) -> tuple[list[str], dict[str, int]]:
    """Secret-bearing settings in SECRET_TREES, and the password settings per file."""
    secrets, password_settings = [], {}
    for top in SECRET_TREES:
        archive = scratch / f"{top.strip('/')}.tar"
        handle.tar_out(top, str(archive))
        with tarfile.open(archive) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                data = tar.extractfile(member).read()
                path = f"{top}/{member.name.removeprefix('./')}"
                secrets += [f"{path}: {m.group(0).decode()}" for m in SECRET_SETTING.finditer(data)]
                if found := len(PASSWORD_SETTING.findall(data)):
                    password_settings[path] = found
    return secrets, password_settings


def test_build_directory_holds_image_manifest_and_log_only(appliance_build: Path) -> None:
    assert sorted(p.name for p in appliance_build.iterdir()) == [
        "build.log",
        "manifest.json",
        "undercloud.qcow2",
    ]
    assert not list(appliance_build.parent.glob(".*tmp-*")), "temporary build dir left behind"


def test_manifest_describes_the_image(appliance_build: Path) -> None:
    manifest = read_manifest(appliance_build)
    image = appliance_build / "undercloud.qcow2"
    assert manifest["release"] == "debian-ci"
    assert manifest["image"]["sha256"] == file_sha256(image)
    assert manifest["image"]["file_size"] == image.stat().st_size
    info = image_info(image)
    assert info["format"] == "qcow2"
    size_gib = manifest["profile"]["resolved"]["image"]["size_gib"]
    assert manifest["image"]["virtual_size"] == info["virtual-size"] == size_gib * 2**30
    # Compressed and sparse: far smaller than the virtual disk.
    assert manifest["image"]["file_size"] < manifest["image"]["virtual_size"] / 3
    assert "python3-openstackclient" in manifest["packages"]
    assert manifest["packages"]["openssh-server"].startswith("1:9.2")
    assert manifest["distro"]["os"]["distro"] == "debian"
    assert manifest["dib"]["version"].startswith("3.")
    assert "undercloud-preinstall" in manifest["dib"]["elements"]
    assert set(manifest["timings"]) >= {"run-diskimage-builder", "finish-with-libguestfs"}
    assert manifest["puddle"]["id"] is None
    # Baked: the smoke commands ran in the booted image and passed.
    smoke = manifest["smoke"]
    assert smoke["passed"] is True
    assert smoke["stage"] == "build"
    # debian-ci bakes the undercloud: a real token, Ironic's drivers, its services.
    commands = manifest["profile"]["resolved"]["undercloud"]["smoke_commands"]
    assert [r["command"] for r in smoke["results"]] == commands
    assert all(result["returncode"] == 0 for result in smoke["results"])
    assert smoke["results"][0]["output_tail"].strip().startswith("20")  # an expiry date
    assert "redfish" in smoke["results"][1]["output_tail"]
    assert {"bake-in-booted-image", "seal-after-bake"} <= set(manifest["timings"])
    for package in manifest["profile"]["resolved"]["undercloud"]["packages"]:
        assert package in manifest["packages"]
    assert "debian-undercloud" in manifest["dib"]["elements"]


def test_deploy_ramdisk_and_image_are_built_recorded_and_baked_in(appliance_build: Path) -> None:
    manifest = read_manifest(appliance_build)
    section = manifest["ironic_images"]
    assert section["agent_version"] == "9.4.3"
    assert section["directory"] == "/srv/ironic/images"
    files = section["files"]
    assert set(files) == {"ipa.kernel", "ipa.initramfs", "deploy-image.qcow2"}
    assert {files[name]["kind"] for name in files} == {"ramdisk", "deploy-image"}
    # Trimmed: the untrimmed bookworm ramdisk (318 MB) would not unpack on a 2 GiB node.
    assert files["ipa.initramfs"]["size"] < 260 * 10**6
    # (test_image_is_identified_and_sealed checks the files in the image against these.)


def test_image_is_identified_and_sealed(appliance_build: Path, tmp_path: Path) -> None:
    manifest = read_manifest(appliance_build)
    handle = open_guestfs()
    try:
        handle.add_drive_opts(str(appliance_build / "undercloud.qcow2"), format="qcow2", readonly=1)
        handle.launch()
        (root,) = handle.inspect_os()
        handle.mount_ro(root, "/")
        release = json.loads(handle.cat("/etc/undercloud-appliance/release.json"))
        machine_id = handle.cat("/etc/machine-id")
        host_keys = handle.glob_expand("/etc/ssh/ssh_host_*")
        hostname = handle.cat("/etc/hostname").strip()
        passwd = handle.cat("/etc/passwd")
        sudoers = handle.cat("/etc/sudoers.d/50-stack")
        grub_cfg = handle.cat("/boot/grub/grub.cfg")
        bake_key_present = handle.exists("/home/stack/.ssh/authorized_keys")
        journal = handle.find("/var/log/journal") if handle.is_dir("/var/log/journal") else []
        images_dir = manifest["ironic_images"]["directory"]
        image_sums = handle.cat(f"{images_dir}/SHA256SUMS")
        image_sizes = {
            name: handle.filesize(f"{images_dir}/{name}")
            for name in manifest["ironic_images"]["files"]
        }
        # Secrets: every appliance makes its own on first boot (undercloud-identity).
        password_files = handle.glob_expand("/etc/undercloud-appliance/*-password")
        keys = handle.ls("/etc/keystone/fernet-keys") + handle.ls("/etc/keystone/credential-keys")
        secret_settings, password_settings = settings_in_trees(handle, tmp_path)
    finally:
        handle.close()
    assert password_files == [] and keys == [], "the build's passwords or Keystone keys"
    assert secret_settings == [], "the published image holds the build's secrets"
    # ... and the settings are there, emptied: undercloud-identity fills them in.
    assert password_settings["/etc/ironic/ironic.conf"] == 3
    assert password_settings["/etc/ironic-inspector/inspector.conf"] == 3
    assert password_settings["/home/stack/.config/openstack/clouds.yaml"] == 1
    # The ramdisk and deploy image in the appliance are the bytes the manifest names.
    files = manifest["ironic_images"]["files"]
    assert dict(line.split()[::-1] for line in image_sums.splitlines()) == {
        name: entry["sha256"] for name, entry in files.items()
    }
    assert image_sizes == {name: entry["size"] for name, entry in files.items()}
    assert release == {
        "build_id": manifest["build_id"],
        "profile": "debian-ci",
        "puddle": None,
        "release": "zed",
    }
    assert machine_id == ""
    assert host_keys == []
    assert hostname == "undercloud"
    assert "\nstack:" in passwd
    assert "NOPASSWD:ALL" in sudoers
    assert "net.ifnames=0" in grub_cfg
    assert not bake_key_present, "the bake boot's ssh key was left in the image"
    assert journal == [], "the bake boot's journal was left in the image"


def test_failing_install_command_leaves_no_output(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "bases").mkdir(parents=True)
    repo_profiles = Path(__file__).resolve().parents[2] / "release-profiles"
    (profiles / "bases" / "debian.yaml").write_text(
        (repo_profiles / "bases" / "debian.yaml").read_text()
    )
    (profiles / "broken-install.yaml").write_text(
        "extends: bases/debian\n"
        "release: zed\n"
        "distro:\n  release: bookworm\n"
        "undercloud:\n"
        "  install_commands:\n"
        "    - 'true'\n"
        "    - test -e /no/such/undercloud/file\n"
    )
    output = tmp_path / "out" / "broken"
    result = run_cli(
        "build",
        "broken-install",
        "--output",
        str(output),
        check=False,
        env={**__import__("os").environ, "UNDERCLOUD_APPLIANCE_PROFILES": str(profiles)},
        timeout=30 * 60,
    )
    assert result.returncode == 3, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1
    assert "install command 2 failed: test -e /no/such/undercloud/file" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert not output.exists()
    assert sorted(p.name for p in output.parent.iterdir()) == ["broken.failed.log"]
    assert "install command 2 failed" in (output.parent / "broken.failed.log").read_text()
