"""``undercloud-appliance verify BUILD_DIR``: boot a finished build and smoke-test it.

A build made without a bake (``build --from --no-verify``, ``--no-bake``) has no
smoke result, so ``promote`` refuses it.  ``verify`` boots the build's
image as an appliance would boot it (a throwaway qcow2 overlay: the image
is not touched), runs the smoke commands its manifest carries, and records
the verdict as the manifest's ``smoke`` (``stage: verify``), which the
promotion gate reads.  The steps:

1. read the manifest and check the image's sha256 against it;
2. put an overlay on the image and authorise a throwaway ssh key for the
   appliance user in it (libguestfs);
3. boot the overlay under qemu (KVM where usable, else TCG; user
   networking, ssh forwarded to 127.0.0.1), wait for ssh;
4. run the smoke commands, stop the guest, discard the overlay;
5. write the verdict into ``manifest.json`` (atomically).

A failing smoke command is recorded too (``passed: false``) and the
command exits non-zero naming it.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builders.bake import GuestShell, make_bake_key, run_smoke_commands
from builders.disk import authorise_boot_key, mounted_os
from builders.qemu_boot import booted
from undercloud_appliance.errors import BuildError
from undercloud_appliance.hypervisor import accelerator
from undercloud_appliance.manifest import file_sha256, read_manifest, write_manifest
from undercloud_appliance.steps import StepRunner
from undercloud_appliance.store_layout import MANIFEST_NAME

log = logging.getLogger(__name__)

BUILD_LOG_NAME = "build.log"
# Keystone, Ironic and ironic-inspector start in it (the import's default too).
DEFAULT_MEMORY_MIB = 3072
BOOT_TIMEOUT = 900


@dataclass
class VerifyContext:
    """State shared by the steps of one verification."""

    build_dir: Path
    memory_mib: int
    scratch: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    key: Path = Path()
    smoke: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> str:
        return str(self.resolved["image"]["user"])

    @property
    def resolved(self) -> dict[str, Any]:
        return self.manifest["profile"].get("resolved") or {}

    @property
    def image(self) -> Path:
        return self.build_dir / self.manifest["image"]["filename"]


def step_check_image(context: VerifyContext) -> None:
    context.manifest = read_manifest(context.build_dir)
    if not context.image.is_file():
        raise BuildError(f"{context.image}: the build's image is missing")
    if file_sha256(context.image) != context.manifest["image"]["sha256"]:
        raise BuildError(
            f"{context.image}: sha256 differs from {context.build_dir / MANIFEST_NAME} "
            "(image.sha256)"
        )
    commands = (context.resolved.get("undercloud") or {}).get("smoke_commands") or []
    if not commands:
        raise BuildError(
            f"{context.build_dir / MANIFEST_NAME}: the profile has no smoke commands to verify"
        )


def step_prepare_overlay(context: VerifyContext) -> None:
    """A qcow2 overlay (the image stays untouched) that lets a throwaway key in."""
    overlay = context.scratch / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
         "-b", str(context.image.resolve()), str(overlay)],
        check=True,
    )  # fmt: skip
    context.key, public_key = make_bake_key(context.scratch)
    with mounted_os(overlay, "authorising the verify key", disk_format="qcow2") as guest:
        authorise_boot_key(guest, context.user, public_key)


def step_boot_and_smoke(context: VerifyContext) -> None:
    commands = context.resolved["undercloud"]["smoke_commands"]
    with booted(
        context.scratch / "overlay.qcow2",
        writable=True,
        image_format="qcow2",
        memory_mib=context.memory_mib,
    ) as guest:
        seconds = guest.wait_for(login_prompt=False, ssh=True, timeout=BOOT_TIMEOUT)
        shell = GuestShell(
            guest, context.key, context.user, context.build_dir / BUILD_LOG_NAME, stage="verify"
        )
        shell.wait_until_ready()
        log.info("    guest up after %.0fs", seconds)
        context.smoke = run_smoke_commands(shell, commands, stage="verify")
    context.smoke["accel"] = accelerator()


def step_record_verdict(context: VerifyContext) -> None:
    context.manifest["smoke"] = context.smoke
    write_manifest(context.build_dir / MANIFEST_NAME, context.manifest)


VERIFY_STEPS = (step_check_image, step_prepare_overlay, step_boot_and_smoke, step_record_verdict)


def verify_build(build_dir: Path, memory_mib: int = DEFAULT_MEMORY_MIB) -> dict[str, Any]:
    """Boot ``build_dir``'s image, smoke-test it, record the verdict; return it.

    Raises BuildError naming the first failed smoke command (after recording it).
    """
    with tempfile.TemporaryDirectory(prefix="appliance-verify-") as scratch:
        context = VerifyContext(Path(build_dir), memory_mib, Path(scratch))
        StepRunner(VERIFY_STEPS).run(context)
    failure = smoke_failure(context.smoke)
    if failure:
        raise BuildError(f"verify {build_dir}: {failure}; recorded in {MANIFEST_NAME}")
    return context.smoke


def smoke_failure(smoke: dict[str, Any]) -> str | None:
    """The first failed smoke command, its exit code and last output line; None if all passed."""
    failed = [r for r in smoke["results"] if r["returncode"] != 0]
    if not failed:
        return None
    first = failed[0]
    last_line = (first["output_tail"].strip().splitlines() or [""])[-1]
    return (
        f"smoke command {first['command']!r} failed (exit {first['returncode']}): "
        f"{last_line[-200:]}"
    )
