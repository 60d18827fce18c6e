"""Derived builds: a parent build's image plus a newer puddle, without a full rebuild.

``undercloud-appliance build PROFILE --from BUILD_DIR --puddle ID|LABEL``
(see :func:`derive_build`) writes a *new* build directory; the parent
build is never modified.  The image is updated offline, with libguestfs,
without booting it; ``build`` then verifies it like a full build
(:mod:`builders.verify`: boot, smoke commands, verdict in the manifest):

1. resolve the puddle (a label is pinned to an id, once); with a profile,
   check that the parent is a build of it (same release and distro
   family) and that the puddle is not older than the parent's;
2. put a qcow2 overlay on the input image, open it with libguestfs
   (network on) and mount the guest's filesystems;
3. replace the previous puddle's repo config with the new puddle's; while
   updating, URLs on the host's loopback are rewritten to 169.254.2.2, the
   host as seen from libguestfs' user-mode network;
4. run the package manager's refresh, install (``install_packages``) and
   upgrade, then the profile's ``undercloud.update_commands``;
5. read back installed versions, write the real (untranslated) repo config
   and ``/etc/undercloud-appliance/puddle-history.json``;
6. write a compressed qcow2, ``manifest.json`` (new build id, puddle,
   packages, checksums, timings, ``update`` with the version diff),
   ``build.log`` and ``version-diff.json`` into a temporary directory next
   to the output, which is renamed into place only when all succeeded.

A failing package (say a postinst that exits 1) raises :class:`UpdateError`
naming the puddle and the package; nothing appears at the output path.
The new manifest names its parent (``updated_from``: build id and puddle)
and both puddles (``update``: ``from_puddle_id`` and ``puddle_id``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from undercloud_appliance import puddle_history
from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.guest_packages import installed_package_versions
from undercloud_appliance.hypervisor import open_guestfs
from undercloud_appliance.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestImage,
    file_sha256,
    new_build_id,
    puddle_section,
    read_manifest,
    write_file_atomically,
    write_manifest,
)
from undercloud_appliance.package_managers import (
    PackageManager,
    UpdatePlan,
    check_package_names,
    is_puddle_repo_file,
    plan_update,
)
from undercloud_appliance.puddle_target import (
    GUEST_LOG_DIR,
    OUTPUT_TAIL_LINES,
    UpdateError,
    failure_summary,
    guest_visible_url,
    resolve_puddle_target,
)
from undercloud_appliance.qcow2 import convert_to_qcow2
from undercloud_appliance.sealed_secrets import seal_secrets
from undercloud_appliance.steps import StepRunner
from undercloud_appliance.version_diff import VersionDiff, diff_versions

log = logging.getLogger(__name__)

IMAGE_NAME = "undercloud.qcow2"
BUILD_LOG_NAME = "build.log"
DIFF_NAME = "version-diff.json"
OVERLAY_NAME = "overlay.qcow2"
INPUT_LINK_NAME = "input.qcow2"
GUEST_COMMAND_OUTPUT = f"{GUEST_LOG_DIR}/.command-output"
POLICY_RC_D = "/usr/sbin/policy-rc.d"
GUESTFS_MEMSIZE_MIB = 1536
# Runs argv ("$@") with its output in a file, always exits 0 and prints the
# exit status: g.command() would otherwise drop stdout on failure.
RUN_CAPTURED = 'out=$1; shift; "$@" >"$out" 2>&1 </dev/null; echo "$?"'
COMMAND_TIMEOUT_SECONDS = 3600
# Dated puddle ids (2026-11-20.1) are ordered; others (DLRN hashes) are not compared.
DATED_PUDDLE_ID = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\.[0-9]+")


@dataclass
class DerivedBuildResult:
    """What :func:`derive_build` wrote."""

    output_dir: Path
    build_id: str
    puddle_id: str
    previous_puddle_id: str | None
    diff: VersionDiff
    manifest: dict[str, Any]
    timings: dict[str, float]


@dataclass
class DerivedBuildContext:
    """State shared by the steps of one derived build."""

    build_dir: Path
    requested_puddle: str
    puddle_base: str | None
    output_dir: Path | None
    install_packages: tuple[str, ...]
    #: The profile the derived build is of (its name and resolved settings), if given.
    profile_name: str | None = None
    profile_family: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    puddle: dict[str, Any] = field(default_factory=dict)
    release: str = ""
    package_manager: PackageManager | None = None
    plan: UpdatePlan | None = None
    puddle_id: str = ""
    previous_puddle_id: str | None = None
    repos: list[dict[str, Any]] = field(default_factory=list)
    work_dir: Path | None = None
    guest: Any = None
    root: str = ""
    mountpoints: list[str] = field(default_factory=list)
    created_policy_rc_d: bool = False
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    diff: VersionDiff = field(default_factory=VersionDiff)
    log_lines: list[str] = field(default_factory=list)
    build_id: str = ""
    new_manifest: dict[str, Any] = field(default_factory=dict)

    def note(self, text: str) -> None:
        log.debug("%s", text.rstrip())
        self.log_lines.append(text.rstrip("\n"))


def run_in_guest(
    context: DerivedBuildContext,
    argv: Sequence[str],
    what: str,
    *,
    timeout_seconds: int = COMMAND_TIMEOUT_SECONDS,
    output_path: str = GUEST_COMMAND_OUTPUT,
) -> str:
    """Run ``argv`` in the guest (coreutils ``timeout`` bounds it); return its output.

    Raises UpdateError naming the puddle, the step and the packages the
    output blames, with the most telling output line.
    """
    context.note(f"+ {' '.join(argv)}")
    bounded = ["timeout", "--kill-after=30", str(timeout_seconds), *argv]
    status_text = context.guest.command(
        ["/bin/sh", "-c", RUN_CAPTURED, "sh", output_path, *bounded]
    )
    output = context.guest.read_file(output_path).decode("utf-8", "replace")
    context.guest.rm_f(output_path)
    context.note(output)
    status = int(status_text.strip().splitlines()[-1])
    if status == 0:
        return output
    context.note(f"exit status {status}")
    tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
    log.warning("%s failed (exit status %d), last output:\n%s", what, status, tail)
    if status in (124, 137):
        raise UpdateError(f"puddle {context.puddle_id}: {what} timed out after {timeout_seconds} s")
    blamed = context.package_manager.failed_packages(output) if context.package_manager else []
    package = f" in package {', '.join(blamed)}" if blamed else ""
    raise UpdateError(
        f"puddle {context.puddle_id}: {what} failed{package} "
        f"(exit status {status}): {failure_summary(output)}"
    )


def step_resolve_puddle(context: DerivedBuildContext) -> None:
    context.manifest = read_manifest(context.build_dir)
    target = resolve_puddle_target(
        context.manifest,
        context.requested_puddle,
        context.puddle_base,
        str(context.build_dir / MANIFEST_NAME),
    )
    context.puddle = target.settings
    context.release = target.release
    context.package_manager = target.package_manager
    check_package_names(context.package_manager, context.install_packages)
    context.puddle_id = target.puddle_id
    context.repos = target.repos
    context.previous_puddle_id = context.manifest["puddle"].get("id")
    check_parent(context)
    context.note(
        f"update {context.build_dir} to puddle {context.puddle_id} "
        f"(requested {context.requested_puddle})"
    )


def check_parent(context: DerivedBuildContext) -> None:
    """The parent is a build of the profile asked for, and not on a newer puddle."""
    where = context.build_dir / MANIFEST_NAME
    if context.profile_name is not None and context.manifest["release"] != context.profile_name:
        raise UpdateError(
            f"{where}: the parent is a build of release {context.manifest['release']!r}, "
            f"not {context.profile_name!r}"
        )
    family = (context.manifest.get("distro") or {}).get("family")
    if context.profile_family is not None and family != context.profile_family:
        raise UpdateError(
            f"{where}: the parent's distro family is {family!r}, the profile's "
            f"{context.profile_family!r}"
        )
    parent = context.previous_puddle_id
    comparable = all(DATED_PUDDLE_ID.fullmatch(i or "") for i in (parent, context.puddle_id))
    if comparable and _dated_key(context.puddle_id) < _dated_key(str(parent)):
        raise UpdateError(
            f"--puddle {context.requested_puddle}: puddle {context.puddle_id} is older than "
            f"the parent's {parent} ({where})"
        )


def _dated_key(puddle_id: str) -> tuple[str, int]:
    day, number = puddle_id.rsplit(".", 1)
    return day, int(number)


def step_prepare_output(context: DerivedBuildContext) -> None:
    context.build_id = new_build_id()
    if context.output_dir is None:
        context.output_dir = context.build_dir.resolve().parent / context.build_id
    context.output_dir = context.output_dir.resolve()
    if context.output_dir.exists() and any(context.output_dir.iterdir()):
        raise UpdateError(f"output directory {context.output_dir} exists and is not empty")
    if context.output_dir == context.build_dir.resolve():
        raise UpdateError(f"output directory {context.output_dir} is the input build")
    context.output_dir.parent.mkdir(parents=True, exist_ok=True)
    context.work_dir = Path(
        tempfile.mkdtemp(
            prefix=f".{context.output_dir.name}.partial-", dir=context.output_dir.parent
        )
    )
    image = (context.build_dir / context.manifest["image"]["filename"]).resolve()
    if not image.is_file():
        raise UpdateError(f"{image}: the build's image is missing")
    # The overlay's backing file must not change under the update (a build
    # directory replaced meanwhile would corrupt the result): pin the
    # input's inode with a hard link (a copy across filesystems), then check
    # it is the image the manifest describes.
    pinned = context.work_dir / INPUT_LINK_NAME
    try:
        os.link(image, pinned)
    except OSError:
        shutil.copyfile(image, pinned)
    if file_sha256(pinned) != context.manifest["image"]["sha256"]:
        raise UpdateError(
            f"{image}: sha256 differs from {context.build_dir / MANIFEST_NAME} "
            "(image.sha256); was the build changed or replaced?"
        )
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(pinned),
            str(context.work_dir / OVERLAY_NAME),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def step_open_image(context: DerivedBuildContext) -> None:
    assert context.work_dir is not None
    guest = open_guestfs(network=True, memsize_mib=GUESTFS_MEMSIZE_MIB)
    context.guest = guest
    guest.add_drive_opts(str(context.work_dir / OVERLAY_NAME), format="qcow2", discard="besteffort")
    guest.launch()
    roots = guest.inspect_os()
    if len(roots) != 1:
        raise UpdateError(
            f"{context.build_dir}: expected one operating system in the image, found {len(roots)}"
        )
    context.root = roots[0]
    mountpoints = guest.inspect_get_mountpoints(context.root)
    for mountpoint in sorted(mountpoints, key=len):
        guest.mount(mountpoints[mountpoint], mountpoint)
        context.mountpoints.append(mountpoint)
    context.before = installed_package_versions(guest.inspect_list_applications2(context.root))
    history = puddle_history.read_guest_history(guest)
    # The manifest is authoritative for this build; the history covers older manifests.
    context.previous_puddle_id = context.previous_puddle_id or puddle_history.current_puddle(
        history
    )
    guest.mkdir_p(GUEST_LOG_DIR)


def _previous_puddle_repo_paths(context: DerivedBuildContext, previous_urls: set[str]) -> list[str]:
    pm = context.package_manager
    assert pm is not None
    if not context.guest.is_dir(pm.repo_dir):
        return []
    paths = []
    for name in context.guest.ls(pm.repo_dir):
        path = f"{pm.repo_dir}/{name}"
        if context.guest.is_file(path) and is_puddle_repo_file(
            context.guest.read_file(path).decode("utf-8", "replace"), previous_urls
        ):
            paths.append(path)
    return paths


def _write_repo_files(context: DerivedBuildContext, files: Mapping[str, str]) -> None:
    for path, content in files.items():
        context.guest.write(path, content.encode())
        context.guest.chmod(0o644, path)
        context.note(f"wrote {path}:\n{content}")


def step_switch_repositories(context: DerivedBuildContext) -> None:
    assert context.package_manager is not None
    previous_urls = {str(r.get("url", "")) for r in context.manifest["puddle"].get("repos") or []}
    for path in _previous_puddle_repo_paths(context, previous_urls):
        context.guest.rm(path)
        context.note(f"removed previous puddle repo file {path}")
    guest_repos = [{**repo, "url": guest_visible_url(repo["url"])} for repo in context.repos]
    context.plan = plan_update(
        context.package_manager, guest_repos, context.puddle_id, context.install_packages
    )
    _write_repo_files(context, context.plan.repo_files)
    if not context.guest.exists(POLICY_RC_D):
        # No service may start inside libguestfs while packages configure.
        context.guest.write(POLICY_RC_D, b"#!/bin/sh\nexit 101\n")
        context.guest.chmod(0o755, POLICY_RC_D)
        context.created_policy_rc_d = True


def step_upgrade_packages(context: DerivedBuildContext) -> None:
    assert context.plan is not None
    for what, argv in context.plan.commands:
        run_in_guest(context, argv, what)


def step_run_update_commands(context: DerivedBuildContext) -> None:
    resolved = context.manifest["profile"].get("resolved") or {}
    commands = (resolved.get("undercloud") or {}).get("update_commands") or []
    for command in commands:
        # Profile content (reviewed like code), run by a shell on purpose.
        run_in_guest(context, ["/bin/sh", "-ec", str(command)], f"update command {command!r}")


def step_record_update(context: DerivedBuildContext) -> None:
    pm = context.package_manager
    assert pm is not None
    guest = context.guest
    if context.created_policy_rc_d:
        guest.rm_f(POLICY_RC_D)
    guest_repos = [{**repo, "url": guest_visible_url(repo["url"])} for repo in context.repos]
    final_files = pm.repo_files(context.repos, context.puddle_id)
    if guest_repos != context.repos:
        _write_repo_files(context, final_files)
    context.after = installed_package_versions(guest.inspect_list_applications2(context.root))
    context.diff = diff_versions(context.before, context.after)
    context.note(f"package versions, before -> after:\n{context.diff.as_text()}")
    history = puddle_history.read_guest_history(guest)
    history.append(
        puddle_history.make_entry(
            context.puddle_id,
            context.previous_puddle_id,
            "ok",
            "offline",
            requested=context.requested_puddle,
            build_id=context.build_id,
            from_build_id=context.manifest["build_id"],
            repo_files=sorted(final_files),
        )
    )
    puddle_history.write_guest_history(guest, history)
    guest.write(
        f"{GUEST_LOG_DIR}/update-{context.puddle_id}.log",
        ("\n".join(context.log_lines) + "\n").encode(),
    )


def step_seal_secrets(context: DerivedBuildContext) -> None:
    """The new build holds no secret either: what the update made is taken out.

    The update commands (undercloud-setup) make passwords and keys when the
    sealed input has none; every appliance imported from the new build makes
    its own on its first boot, as from the input.
    """
    sealed = seal_secrets(context.guest)
    if sealed:
        context.note(f"secrets taken out (made again on each first boot): {', '.join(sealed)}")


def step_close_image(context: DerivedBuildContext) -> None:
    guest = context.guest
    for mountpoint in context.mountpoints:
        try:
            guest.fstrim(mountpoint)
        except RuntimeError as error:  # discard unsupported: the image is only larger
            log.debug("fstrim %s: %s", mountpoint, error)
    guest.shutdown()
    guest.close()
    context.guest = None


def step_write_image(context: DerivedBuildContext) -> None:
    assert context.work_dir is not None
    profile_image = (context.manifest["profile"].get("resolved") or {}).get("image") or {}
    compression = context.manifest["image"].get("compression", profile_image.get("compression"))
    try:
        convert_to_qcow2(
            context.work_dir / OVERLAY_NAME,
            context.work_dir / IMAGE_NAME,
            source_format="qcow2",
            compress=bool(compression),
            compression_type="zstd" if compression == "zstd" else None,
        )
    except ApplianceError as error:
        raise UpdateError(f"puddle {context.puddle_id}: {error}") from None
    (context.work_dir / OVERLAY_NAME).unlink()
    (context.work_dir / INPUT_LINK_NAME).unlink()


def step_write_manifest(context: DerivedBuildContext) -> None:
    assert context.work_dir is not None and context.package_manager is not None
    parent = Manifest.from_dict(context.manifest, str(context.build_dir / MANIFEST_NAME))
    try:
        image = ManifestImage.of_file(
            context.work_dir / IMAGE_NAME,
            compression=parent.image.compression,
            extra=parent.image.extra,
        )
    except ApplianceError as error:
        raise UpdateError(f"puddle {context.puddle_id}: {error}") from None
    manifest = parent.successor(
        build_id=context.build_id,
        puddle=puddle_section(
            puddle_id=context.puddle_id,
            requested=context.requested_puddle,
            package_manager=context.package_manager.name,
            base_url=context.puddle.get("base_url", ""),
            repos=context.repos,
        ),
        image=image,
        packages=dict(sorted(context.after.items())),
        extra={
            "updated_from": {
                "build_id": parent.build_id,
                "puddle_id": context.previous_puddle_id,
            },
            "update": {
                "mode": "offline",
                "applied_at": puddle_history.utc_now(),
                "puddle_id": context.puddle_id,
                "from_puddle_id": context.previous_puddle_id,
                "diff": context.diff.as_dict(),
            },
        },
    )
    context.new_manifest = manifest.to_dict()
    write_file_atomically(
        context.work_dir / DIFF_NAME, (json.dumps(context.diff.as_dict(), indent=2) + "\n").encode()
    )


def _publish_output(context: DerivedBuildContext, timings: dict[str, float]) -> None:
    assert context.work_dir is not None and context.output_dir is not None
    context.new_manifest["timings"] = timings
    write_manifest(context.work_dir / MANIFEST_NAME, context.new_manifest)
    input_log = context.build_dir / BUILD_LOG_NAME
    earlier = input_log.read_bytes() if input_log.is_file() else b""
    header = (
        f"\n===== offline update of build {context.manifest['build_id']} to puddle "
        f"{context.puddle_id} (build {context.build_id}) =====\n"
    )
    write_file_atomically(
        context.work_dir / BUILD_LOG_NAME,
        earlier + header.encode() + ("\n".join(context.log_lines) + "\n").encode(),
    )
    context.work_dir.chmod(0o755)
    try:
        if context.output_dir.exists():
            context.output_dir.rmdir()  # empty (checked before): rename needs it gone
        context.work_dir.rename(context.output_dir)
    except OSError as error:
        raise UpdateError(
            f"output directory {context.output_dir}: cannot put the new build in place "
            f"({error.strerror}); did something else write there meanwhile?"
        ) from None
    context.work_dir = None


DERIVED_BUILD_STEPS = (
    step_resolve_puddle,
    step_prepare_output,
    step_open_image,
    step_switch_repositories,
    step_upgrade_packages,
    step_run_update_commands,
    step_record_update,
    step_seal_secrets,
    step_close_image,
    step_write_image,
    step_write_manifest,
)


def derive_build(
    build_dir: Path | str,
    requested_puddle: str,
    puddle_base: str | None = None,
    output_dir: Path | str | None = None,
    install_packages: Sequence[str] = (),
    profile_name: str | None = None,
    profile_family: str | None = None,
) -> DerivedBuildResult:
    """Write ``build_dir`` updated to ``requested_puddle`` (an id or a label) as a new build.

    ``puddle_base`` overrides the profile's / manifest's ``puddle.base_url``;
    ``output_dir`` defaults to ``<build_dir>/../<new build id>`` and must not
    exist or be empty; ``install_packages`` are installed (or upgraded) from
    the puddle before the upgrade.  With ``profile_name`` (and
    ``profile_family``) the parent must be a build of that release and
    family.  Raises :class:`UpdateError` (or another ApplianceError) with
    nothing written at ``output_dir``.
    """
    context = DerivedBuildContext(
        build_dir=Path(build_dir),
        requested_puddle=requested_puddle,
        puddle_base=puddle_base,
        output_dir=Path(output_dir) if output_dir is not None else None,
        install_packages=tuple(install_packages),
        profile_name=profile_name,
        profile_family=profile_family,
    )
    runner: StepRunner[DerivedBuildContext] = StepRunner(DERIVED_BUILD_STEPS)
    try:
        timings = runner.run(context).as_dict()
        _publish_output(context, timings)
    except RuntimeError as error:  # libguestfs reports its errors as RuntimeError
        puddle = context.puddle_id or context.requested_puddle
        raise UpdateError(f"puddle {puddle}: libguestfs: {_one_line(error)}") from None
    except subprocess.CalledProcessError as error:
        puddle = context.puddle_id or context.requested_puddle
        raise UpdateError(
            f"puddle {puddle}: {error.cmd[0]} {error.cmd[1]} "
            f"failed: {failure_summary(error.stderr or '')}"
        ) from None
    finally:
        if context.guest is not None:
            context.guest.close()
        if context.work_dir is not None:
            shutil.rmtree(context.work_dir, ignore_errors=True)
    assert context.output_dir is not None
    return DerivedBuildResult(
        output_dir=context.output_dir,
        build_id=context.build_id,
        puddle_id=context.puddle_id,
        previous_puddle_id=context.previous_puddle_id,
        diff=context.diff,
        manifest=context.new_manifest,
        timings=timings,
    )


def _one_line(error: BaseException) -> str:
    return re.sub(r"\s+", " ", str(error)).strip()
