"""Running diskimage-builder: command line, environment and its log."""

from __future__ import annotations

import grp
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from undercloud_appliance.errors import BuildError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
ELEMENTS_DIR = REPO_ROOT / "elements"
BLOCK_DEVICE_CONFIG = Path(__file__).resolve().parent / "block-device-rootfs.yaml"
INSTALL_COMMAND_FAILED = re.compile(r"undercloud-appliance: install command \d+ failed: .*")
PHASE_LINE = re.compile(r"dib-run-parts Running \S*/([a-z-]+\.d)/(\S+)")


def dib_version() -> str:
    from diskimage_builder import version

    return version.version_info.version_string()


def disk_image_create() -> str:
    """Path of ``disk-image-create`` from the interpreter's environment."""
    candidate = Path(sys.executable).parent / "disk-image-create"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("disk-image-create")
    if not found:
        raise BuildError("disk-image-create not found: install diskimage-builder")
    return found


def dib_environment(
    distro: Mapping, data_dir: Path, cache_dir: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    """The environment DIB runs with, from the profile's distro section."""
    env = dict(os.environ)
    # DIB runs its helpers (dib-run-parts, dib-block-device) by name, also
    # through sudo; keep this interpreter's bin directory first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(
        {
            "ELEMENTS_PATH": str(ELEMENTS_DIR),
            "DIB_RELEASE": str(distro["release"]),
            "DIB_DISTRIBUTION_MIRROR": str(distro["mirror"]),
            "DIB_BLOCK_DEVICE_CONFIG": f"file://{BLOCK_DEVICE_CONFIG}",
            "DIB_APPLIANCE_DATA": str(data_dir),
            "DIB_IMAGE_CACHE": str(cache_dir / "dib"),
            "TMP_DIR": str(cache_dir / "tmp"),
            # Enough for a tmpfs build of the tree on hosts with the RAM.
            "DIB_MIN_TMPFS": "4",
        }
    )
    if distro.get("security_mirror"):
        env["DIB_DEBIAN_SECURITY_MIRROR"] = str(distro["security_mirror"])
    env.update({key: str(value) for key, value in extra.items()})
    (cache_dir / "dib").mkdir(parents=True, exist_ok=True)
    (cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def dib_command(elements: Sequence[str], output_stem: Path) -> list[str]:
    return [
        disk_image_create(),
        "-a",
        "amd64",
        "-t",
        "raw",
        "-o",
        str(output_stem),
        *elements,
    ]


KVM_DEVICE = Path("/dev/kvm")


def _device_group(device: Path) -> int | None:
    try:
        return device.stat().st_gid
    except OSError:
        return None


def _restore_device_group(device: Path, group: int | None) -> None:
    """Undo a chroot's change to a host device's group.

    DIB bind-mounts the host's /dev into the chroot; a package that sets up
    udev there (the ironic-python-agent ramdisk's) can give /dev/kvm the
    chroot's kvm group id, a different group on the host, after which
    libvirt hangs probing qemu.  Restored to the host's ``kvm`` group (its
    owner on Debian), or to what it was when the host has no such group.
    """
    now = _device_group(device)
    if group is None or now is None or now == group:
        return
    try:
        wanted = grp.getgrnam("kvm").gr_gid
    except KeyError:
        wanted = group
    log.warning(
        "%s changed group during the DIB run (%d -> %d): set to %d", device, group, now, wanted
    )
    os.chown(device, -1, wanted)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class DibCancelled(BuildError):
    """The caller cancelled a DIB run (another part of the build failed)."""


def run_dib(
    command: Sequence[str],
    env: Mapping[str, str],
    build_log: Path,
    *,
    label: str = "dib",
    cancel: threading.Event | None = None,
) -> None:
    """Run DIB, appending its output to ``build_log``; raise on failure.

    The phase and script DIB is running are logged at info level (as
    ``label``) so a long build shows where it is; everything else goes to
    the build log only.  Setting ``cancel`` stops the run at its next line.
    """
    log.debug("running %s", " ".join(command))
    kvm_group = _device_group(KVM_DEVICE)
    last_lines: list[str] = []
    failure_line = None
    with build_log.open("a", encoding="utf-8") as log_file:
        log_file.write(f"$ {' '.join(command)}\n")
        log_file.flush()
        process = subprocess.Popen(
            command,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                if cancel is not None and cancel.is_set():
                    raise DibCancelled(f"{label}: cancelled")
                log_file.write(line)
                phase = PHASE_LINE.search(line)
                if phase:
                    log.info("    %s %s/%s", label, *phase.groups())
                failed = INSTALL_COMMAND_FAILED.search(line)
                if failed:
                    failure_line = failed.group(0)
                last_lines = [*last_lines[-19:], line.rstrip()]
            returncode = process.wait()
        except BaseException:
            # Interrupted (Ctrl-C, a failure here): DIB unmounts its chroot
            # and removes its tmpfs on SIGTERM; never leave it running alone.
            _stop(process)
            _restore_device_group(KVM_DEVICE, kvm_group)
            raise
    _restore_device_group(KVM_DEVICE, kvm_group)
    if returncode != 0:
        if failure_line:
            raise BuildError(
                f"{failure_line.removeprefix('undercloud-appliance: ')} (see {build_log})"
            )
        tail = next((line for line in reversed(last_lines) if line.strip()), "")
        raise BuildError(
            f"disk-image-create failed with exit code {returncode}: {tail.strip()[-200:]} "
            f"(see {build_log})"
        )
