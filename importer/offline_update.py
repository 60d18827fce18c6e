"""Offline update: apply a puddle to a build's image without booting it.

``undercloud-appliance update --offline BUILD_DIR --puddle ID|LABEL`` (see
:func:`offline_update_build`) writes a *new* build directory; the input
build is never modified:

1. resolve the puddle (a label is pinned to an id, once);
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
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from importer import puddle_history
from importer.package_managers import (
    PackageManager,
    UpdatePlan,
    check_package_names,
    check_puddle_id,
    check_repo_url,
    get_package_manager,
    is_puddle_repo_file,
    plan_update,
)
from importer.version_diff import VersionDiff, diff_versions
from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.hypervisor import open_guestfs
from undercloud_appliance.manifest import (
    MANIFEST_NAME,
    read_manifest,
    validate_manifest,
    write_file_atomically,
    write_manifest,
)
from undercloud_appliance.puddles import render_repos, resolve_puddle
from undercloud_appliance.steps import StepRunner

log = logging.getLogger(__name__)

IMAGE_NAME = "undercloud.qcow2"
BUILD_LOG_NAME = "build.log"
DIFF_NAME = "version-diff.json"
OVERLAY_NAME = "overlay.qcow2"
INPUT_LINK_NAME = "input.qcow2"
# The host's 127.0.0.1 as a guest on qemu's user-mode network (slirp) reaches it.
# libguestfs' direct backend runs slirp with net=169.254.0.0/16 (gateway
# 169.254.2.2, measured: /proc/net/route inside the appliance); a plain
# qemu/libvirt user-mode guest uses the default 10.0.2.2.
GUESTFS_HOST_ADDRESS = "169.254.2.2"
USER_MODE_HOST_ADDRESS = "10.0.2.2"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
GUEST_LOG_DIR = "/var/log/undercloud-appliance"
GUEST_COMMAND_OUTPUT = f"{GUEST_LOG_DIR}/.command-output"
POLICY_RC_D = "/usr/sbin/policy-rc.d"
GUESTFS_MEMSIZE_MIB = 1536
OUTPUT_TAIL_LINES = 25
# Runs argv ("$@") with its output in a file, always exits 0 and prints the
# exit status: g.command() would otherwise drop stdout on failure.
RUN_CAPTURED = 'out=$1; shift; "$@" >"$out" 2>&1 </dev/null; echo "$?"'
COMMAND_TIMEOUT_SECONDS = 3600


class UpdateError(ApplianceError):
    """An update could not be applied; the output was not written."""

    exit_code = 9


@dataclass
class OfflineUpdateResult:
    """What :func:`offline_update_build` wrote."""

    output_dir: Path
    build_id: str
    puddle_id: str
    previous_puddle_id: str | None
    diff: VersionDiff
    manifest: dict[str, Any]
    timings: dict[str, float]


@dataclass
class _Update:
    """State shared by the steps of one offline update."""

    build_dir: Path
    requested_puddle: str
    puddle_base: str | None
    output_dir: Path | None
    install_packages: tuple[str, ...]
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


def guest_visible_url(url: str, host_address: str = GUESTFS_HOST_ADDRESS) -> str:
    """``url`` as a user-mode-network guest reaches it: the host's loopback -> ``host_address``."""
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK_HOSTS:
        return url
    netloc = host_address + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def new_build_id(now: datetime.datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxx`` as in docs/manifest-format.rst."""
    now = now or datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def package_versions(applications: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """name -> ``[epoch:]version[-release]`` from ``inspect_list_applications2``."""
    versions = {}
    for app in applications:
        version = str(app.get("app2_version", ""))
        if app.get("app2_release"):
            version += f"-{app['app2_release']}"
        if app.get("app2_epoch"):
            version = f"{app['app2_epoch']}:{version}"
        versions[str(app["app2_name"])] = version
    return versions


def failure_summary(output: str) -> str:
    """The most telling line of a failed command's output, for a one-line error."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("E:", "Error:", "error:")):
            return line
    return lines[-1] if lines else "no output"


def run_in_guest(
    ctx: _Update,
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
    ctx.note(f"+ {' '.join(argv)}")
    bounded = ["timeout", "--kill-after=30", str(timeout_seconds), *argv]
    status_text = ctx.guest.command(["/bin/sh", "-c", RUN_CAPTURED, "sh", output_path, *bounded])
    output = ctx.guest.read_file(output_path).decode("utf-8", "replace")
    ctx.guest.rm_f(output_path)
    ctx.note(output)
    status = int(status_text.strip().splitlines()[-1])
    if status == 0:
        return output
    ctx.note(f"exit status {status}")
    tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
    log.warning("%s failed (exit status %d), last output:\n%s", what, status, tail)
    if status in (124, 137):
        raise UpdateError(f"puddle {ctx.puddle_id}: {what} timed out after {timeout_seconds} s")
    blamed = ctx.package_manager.failed_packages(output) if ctx.package_manager else []
    package = f" in package {', '.join(blamed)}" if blamed else ""
    raise UpdateError(
        f"puddle {ctx.puddle_id}: {what} failed{package} "
        f"(exit status {status}): {failure_summary(output)}"
    )


@dataclass(frozen=True)
class PuddleTarget:
    """Where an update goes: the pinned puddle and its rendered repositories."""

    puddle_id: str
    release: str
    repos: list[dict[str, Any]]
    package_manager: PackageManager
    settings: dict[str, Any]


def resolve_puddle_target(
    manifest: Mapping[str, Any],
    requested: str,
    puddle_base: str | None = None,
    source: str = MANIFEST_NAME,
) -> PuddleTarget:
    """Pin ``requested`` (an id or a label) with the puddle settings a manifest carries.

    Shared by the offline and online updaters: the profile's puddle section
    travels in the manifest (``profile.resolved.puddle``); ``puddle_base``
    overrides its ``base_url`` (else the manifest's recorded one is used).
    """
    resolved = manifest["profile"].get("resolved") or {}
    settings = copy.deepcopy(resolved.get("puddle") or {})
    if not settings.get("id_pattern"):
        raise UpdateError(f"{source}: the profile has no puddle section")
    base_url = puddle_base or manifest["puddle"].get("base_url") or settings.get("base_url")
    if base_url:
        settings["base_url"] = check_repo_url(base_url.rstrip("/"), "puddle base URL")
    # Templates' {release} is the profile's OpenStack release (zed), else the profile name.
    release = str(resolved.get("release") or manifest["release"])
    package_manager = get_package_manager(settings.get("package_manager", "apt"))
    puddle_id = resolve_puddle(settings, requested, release)
    if puddle_id is None:
        raise UpdateError(
            f"--puddle {requested!r}: an update needs a puddle id or label, not 'none'"
        )
    check_puddle_id(puddle_id, settings["id_pattern"])
    return PuddleTarget(
        puddle_id=puddle_id,
        release=release,
        repos=render_repos(settings, puddle_id, release),
        package_manager=package_manager,
        settings=settings,
    )


def step_resolve_puddle(ctx: _Update) -> None:
    ctx.manifest = read_manifest(ctx.build_dir)
    target = resolve_puddle_target(
        ctx.manifest, ctx.requested_puddle, ctx.puddle_base, str(ctx.build_dir / MANIFEST_NAME)
    )
    ctx.puddle = target.settings
    ctx.release = target.release
    ctx.package_manager = target.package_manager
    check_package_names(ctx.package_manager, ctx.install_packages)
    ctx.puddle_id = target.puddle_id
    ctx.repos = target.repos
    ctx.previous_puddle_id = ctx.manifest["puddle"].get("id")
    ctx.note(f"update {ctx.build_dir} to puddle {ctx.puddle_id} (requested {ctx.requested_puddle})")


def step_prepare_output(ctx: _Update) -> None:
    ctx.build_id = new_build_id()
    if ctx.output_dir is None:
        ctx.output_dir = ctx.build_dir.resolve().parent / ctx.build_id
    ctx.output_dir = ctx.output_dir.resolve()
    if ctx.output_dir.exists() and any(ctx.output_dir.iterdir()):
        raise UpdateError(f"output directory {ctx.output_dir} exists and is not empty")
    if ctx.output_dir == ctx.build_dir.resolve():
        raise UpdateError(f"output directory {ctx.output_dir} is the input build")
    ctx.output_dir.parent.mkdir(parents=True, exist_ok=True)
    ctx.work_dir = Path(
        tempfile.mkdtemp(prefix=f".{ctx.output_dir.name}.partial-", dir=ctx.output_dir.parent)
    )
    image = (ctx.build_dir / ctx.manifest["image"]["filename"]).resolve()
    if not image.is_file():
        raise UpdateError(f"{image}: the build's image is missing")
    # The overlay's backing file must not change under the update (a build
    # directory replaced meanwhile would corrupt the result): pin the
    # input's inode with a hard link (a copy across filesystems), then check
    # it is the image the manifest describes.
    pinned = ctx.work_dir / INPUT_LINK_NAME
    try:
        os.link(image, pinned)
    except OSError:
        shutil.copyfile(image, pinned)
    if _sha256(pinned) != ctx.manifest["image"]["sha256"]:
        raise UpdateError(
            f"{image}: sha256 differs from {ctx.build_dir / MANIFEST_NAME} "
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
            str(ctx.work_dir / OVERLAY_NAME),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def step_open_image(ctx: _Update) -> None:
    assert ctx.work_dir is not None
    guest = open_guestfs(network=True, memsize_mib=GUESTFS_MEMSIZE_MIB)
    ctx.guest = guest
    guest.add_drive_opts(str(ctx.work_dir / OVERLAY_NAME), format="qcow2", discard="besteffort")
    guest.launch()
    roots = guest.inspect_os()
    if len(roots) != 1:
        raise UpdateError(
            f"{ctx.build_dir}: expected one operating system in the image, found {len(roots)}"
        )
    ctx.root = roots[0]
    mountpoints = guest.inspect_get_mountpoints(ctx.root)
    for mountpoint in sorted(mountpoints, key=len):
        guest.mount(mountpoints[mountpoint], mountpoint)
        ctx.mountpoints.append(mountpoint)
    ctx.before = package_versions(guest.inspect_list_applications2(ctx.root))
    history = puddle_history.read_guest_history(guest)
    # The manifest is authoritative for this build; the history covers older manifests.
    ctx.previous_puddle_id = ctx.previous_puddle_id or puddle_history.current_puddle(history)
    guest.mkdir_p(GUEST_LOG_DIR)


def _previous_puddle_repo_paths(ctx: _Update, previous_urls: set[str]) -> list[str]:
    pm = ctx.package_manager
    assert pm is not None
    if not ctx.guest.is_dir(pm.repo_dir):
        return []
    paths = []
    for name in ctx.guest.ls(pm.repo_dir):
        path = f"{pm.repo_dir}/{name}"
        if ctx.guest.is_file(path) and is_puddle_repo_file(
            ctx.guest.read_file(path).decode("utf-8", "replace"), previous_urls
        ):
            paths.append(path)
    return paths


def _write_repo_files(ctx: _Update, files: Mapping[str, str]) -> None:
    for path, content in files.items():
        ctx.guest.write(path, content.encode())
        ctx.guest.chmod(0o644, path)
        ctx.note(f"wrote {path}:\n{content}")


def step_switch_repositories(ctx: _Update) -> None:
    assert ctx.package_manager is not None
    previous_urls = {str(r.get("url", "")) for r in ctx.manifest["puddle"].get("repos") or []}
    for path in _previous_puddle_repo_paths(ctx, previous_urls):
        ctx.guest.rm(path)
        ctx.note(f"removed previous puddle repo file {path}")
    guest_repos = [{**repo, "url": guest_visible_url(repo["url"])} for repo in ctx.repos]
    ctx.plan = plan_update(ctx.package_manager, guest_repos, ctx.puddle_id, ctx.install_packages)
    _write_repo_files(ctx, ctx.plan.repo_files)
    if not ctx.guest.exists(POLICY_RC_D):
        # No service may start inside libguestfs while packages configure.
        ctx.guest.write(POLICY_RC_D, b"#!/bin/sh\nexit 101\n")
        ctx.guest.chmod(0o755, POLICY_RC_D)
        ctx.created_policy_rc_d = True


def step_upgrade_packages(ctx: _Update) -> None:
    assert ctx.plan is not None
    for what, argv in ctx.plan.commands:
        run_in_guest(ctx, argv, what)


def step_run_update_commands(ctx: _Update) -> None:
    resolved = ctx.manifest["profile"].get("resolved") or {}
    commands = (resolved.get("undercloud") or {}).get("update_commands") or []
    for command in commands:
        # Profile content (reviewed like code), run by a shell on purpose.
        run_in_guest(ctx, ["/bin/sh", "-ec", str(command)], f"update command {command!r}")


def step_record_update(ctx: _Update) -> None:
    pm = ctx.package_manager
    assert pm is not None
    guest = ctx.guest
    if ctx.created_policy_rc_d:
        guest.rm_f(POLICY_RC_D)
    guest_repos = [{**repo, "url": guest_visible_url(repo["url"])} for repo in ctx.repos]
    final_files = pm.repo_files(ctx.repos, ctx.puddle_id)
    if guest_repos != ctx.repos:
        _write_repo_files(ctx, final_files)
    ctx.after = package_versions(guest.inspect_list_applications2(ctx.root))
    ctx.diff = diff_versions(ctx.before, ctx.after)
    ctx.note(f"package versions, before -> after:\n{ctx.diff.as_text()}")
    history = puddle_history.read_guest_history(guest)
    history.append(
        puddle_history.make_entry(
            ctx.puddle_id,
            ctx.previous_puddle_id,
            "ok",
            "offline",
            requested=ctx.requested_puddle,
            build_id=ctx.build_id,
            from_build_id=ctx.manifest["build_id"],
            repo_files=sorted(final_files),
        )
    )
    puddle_history.write_guest_history(guest, history)
    guest.write(
        f"{GUEST_LOG_DIR}/update-{ctx.puddle_id}.log", ("\n".join(ctx.log_lines) + "\n").encode()
    )


def step_close_image(ctx: _Update) -> None:
    guest = ctx.guest
    for mountpoint in ctx.mountpoints:
        try:
            guest.fstrim(mountpoint)
        except RuntimeError as error:  # discard unsupported: the image is only larger
            log.debug("fstrim %s: %s", mountpoint, error)
    guest.shutdown()
    guest.close()
    ctx.guest = None


def step_write_image(ctx: _Update) -> None:
    assert ctx.work_dir is not None
    profile_image = (ctx.manifest["profile"].get("resolved") or {}).get("image") or {}
    compression = ctx.manifest["image"].get("compression", profile_image.get("compression"))
    options = []
    if compression:
        options = ["-c"] + (["-o", "compression_type=zstd"] if compression == "zstd" else [])
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            *options,
            str(ctx.work_dir / OVERLAY_NAME),
            str(ctx.work_dir / IMAGE_NAME),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (ctx.work_dir / OVERLAY_NAME).unlink()
    (ctx.work_dir / INPUT_LINK_NAME).unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _virtual_size(path: Path) -> int:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return int(json.loads(info)["virtual-size"])


def step_write_manifest(ctx: _Update) -> None:
    assert ctx.work_dir is not None and ctx.package_manager is not None
    image = ctx.work_dir / IMAGE_NAME
    now = puddle_history.utc_now()
    manifest = copy.deepcopy(ctx.manifest)
    manifest.update(
        build_id=ctx.build_id,
        created=now,
        packages=dict(sorted(ctx.after.items())),
        smoke=None,
        updated_from={"build_id": ctx.manifest["build_id"], "puddle_id": ctx.previous_puddle_id},
        update={
            "mode": "offline",
            "applied_at": now,
            "puddle_id": ctx.puddle_id,
            "from_puddle_id": ctx.previous_puddle_id,
            "diff": ctx.diff.as_dict(),
        },
    )
    manifest["puddle"] = {
        "id": ctx.puddle_id,
        "requested": ctx.requested_puddle,
        "package_manager": ctx.package_manager.name,
        "base_url": ctx.puddle.get("base_url", ""),
        "repos": ctx.repos,
    }
    manifest["image"] = {
        **ctx.manifest["image"],
        "filename": IMAGE_NAME,
        "format": "qcow2",
        "virtual_size": _virtual_size(image),
        "file_size": image.stat().st_size,
        "sha256": _sha256(image),
    }
    validate_manifest(manifest, str(ctx.work_dir / MANIFEST_NAME))
    ctx.new_manifest = manifest
    write_file_atomically(
        ctx.work_dir / DIFF_NAME, (json.dumps(ctx.diff.as_dict(), indent=2) + "\n").encode()
    )


def _publish_output(ctx: _Update, timings: dict[str, float]) -> None:
    assert ctx.work_dir is not None and ctx.output_dir is not None
    ctx.new_manifest["timings"] = timings
    write_manifest(ctx.work_dir / MANIFEST_NAME, ctx.new_manifest)
    input_log = ctx.build_dir / BUILD_LOG_NAME
    earlier = input_log.read_bytes() if input_log.is_file() else b""
    header = (
        f"\n===== offline update of build {ctx.manifest['build_id']} to puddle "
        f"{ctx.puddle_id} (build {ctx.build_id}) =====\n"
    )
    write_file_atomically(
        ctx.work_dir / BUILD_LOG_NAME,
        earlier + header.encode() + ("\n".join(ctx.log_lines) + "\n").encode(),
    )
    ctx.work_dir.chmod(0o755)
    try:
        if ctx.output_dir.exists():
            ctx.output_dir.rmdir()  # empty (checked before): rename needs it gone
        ctx.work_dir.rename(ctx.output_dir)
    except OSError as error:
        raise UpdateError(
            f"output directory {ctx.output_dir}: cannot put the new build in place "
            f"({error.strerror}); did something else write there meanwhile?"
        ) from None
    ctx.work_dir = None


def offline_update_build(
    build_dir: Path | str,
    requested_puddle: str,
    puddle_base: str | None = None,
    output_dir: Path | str | None = None,
    install_packages: Sequence[str] = (),
) -> OfflineUpdateResult:
    """Write ``build_dir`` updated to ``requested_puddle`` (an id or a label) as a new build.

    ``puddle_base`` overrides the profile's / manifest's ``puddle.base_url``;
    ``output_dir`` defaults to ``<build_dir>/../<new build id>`` and must not
    exist or be empty; ``install_packages`` are installed (or upgraded) from
    the puddle before the upgrade.  Raises :class:`UpdateError` (or another
    ApplianceError) with nothing written at ``output_dir``.
    """
    ctx = _Update(
        build_dir=Path(build_dir),
        requested_puddle=requested_puddle,
        puddle_base=puddle_base,
        output_dir=Path(output_dir) if output_dir is not None else None,
        install_packages=tuple(install_packages),
    )
    runner: StepRunner[_Update] = StepRunner(
        [
            step_resolve_puddle,
            step_prepare_output,
            step_open_image,
            step_switch_repositories,
            step_upgrade_packages,
            step_run_update_commands,
            step_record_update,
            step_close_image,
            step_write_image,
            step_write_manifest,
        ]
    )
    try:
        timings = runner.run(ctx).as_dict()
        _publish_output(ctx, timings)
    except RuntimeError as error:  # libguestfs reports its errors as RuntimeError
        raise UpdateError(
            f"puddle {ctx.puddle_id or ctx.requested_puddle}: libguestfs: {_one_line(error)}"
        ) from None
    except subprocess.CalledProcessError as error:
        raise UpdateError(
            f"puddle {ctx.puddle_id or ctx.requested_puddle}: {error.cmd[0]} {error.cmd[1]} "
            f"failed: {failure_summary(error.stderr or '')}"
        ) from None
    finally:
        if ctx.guest is not None:
            ctx.guest.close()
        if ctx.work_dir is not None:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
    assert ctx.output_dir is not None
    return OfflineUpdateResult(
        output_dir=ctx.output_dir,
        build_id=ctx.build_id,
        puddle_id=ctx.puddle_id,
        previous_puddle_id=ctx.previous_puddle_id,
        diff=ctx.diff,
        manifest=ctx.new_manifest,
        timings=timings,
    )


def _one_line(error: BaseException) -> str:
    return re.sub(r"\s+", " ", str(error)).strip()


def add_offline_update_arguments(parser: argparse.ArgumentParser) -> None:
    """``update --offline BUILD_DIR --puddle ID|LABEL [...]`` options (for importer.cli)."""
    parser.add_argument(
        "--offline",
        dest="offline_build_dir",
        metavar="BUILD_DIR",
        type=Path,
        help="update this build directory's image without booting it (writes a new build)",
    )
    parser.add_argument("--puddle", required=True, metavar="ID|LABEL", help="puddle to apply")
    parser.add_argument(
        "--puddle-base", metavar="URL", help="puddle base URL (default: the build's)"
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        help="new build directory (default: next to BUILD_DIR, named by the new build id)",
    )
    parser.add_argument(
        "--install",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="also install this package from the puddle (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def format_result(result: OfflineUpdateResult, as_json: bool = False) -> str:
    """What ``update --offline`` prints: the new build and the version diff."""
    if as_json:
        return json.dumps(
            {
                "output_dir": str(result.output_dir),
                "build_id": result.build_id,
                "puddle_id": result.puddle_id,
                "previous_puddle_id": result.previous_puddle_id,
                "diff": result.diff.as_dict(),
            },
            indent=2,
        )
    return (
        f"updated to puddle {result.puddle_id} (from {result.previous_puddle_id or 'no puddle'}): "
        f"new build {result.build_id} in {result.output_dir}\n{result.diff.as_text()}"
    ).rstrip("\n")


def run_offline_update(args: argparse.Namespace) -> int:
    """Run ``update --offline`` from parsed :func:`add_offline_update_arguments` options."""
    result = offline_update_build(
        args.offline_build_dir,
        args.puddle,
        puddle_base=args.puddle_base,
        output_dir=args.output,
        install_packages=args.install,
    )
    print(format_result(result, args.json))
    return 0
