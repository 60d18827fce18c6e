"""``undercloud-appliance build``: a release profile becomes a build directory.

The build reads as a list of small timed steps (see ``PREPARING_STEPS``
and ``BUILD_STEPS``).  The output directory is complete or absent:
everything happens in a temporary sibling directory renamed into place
last.  On failure only the build log is kept, next to where the output
would have been.

The preparing steps end with a digest of the build's inputs
(``builders.input_digest``), recorded in the manifest.  ``--replace`` over
an intact build of the same inputs is a cache hit: that build is kept as
it is and nothing is rebuilt (``--rebuild`` builds anyway).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builders import dib
from builders.appliance_data import write_appliance_data
from builders.bake import bake, make_bake_key
from builders.build_host import check_buildable_here
from builders.disk import (
    DiskFacts,
    finish_disk,
    mounted_os,
    place_filesystem_on_disk,
    seal_mounted_os,
)
from builders.input_digest import ApplianceInputs
from builders.ironic_images import (
    BACKGROUND_IMAGE_KINDS,
    IMAGE_KINDS,
    BackgroundImage,
    IronicImagesSpec,
    add_images_to_disk,
    cache_key,
    ensure_image,
)
from builders.profiles import Profile, load_profile
from undercloud_appliance.errors import ApplianceError, BuildError
from undercloud_appliance.manifest import (
    Manifest,
    ManifestError,
    ManifestImage,
    file_sha256,
    new_build_id,
    puddle_section,
)
from undercloud_appliance.puddles import render_repos, resolve_puddle
from undercloud_appliance.qcow2 import convert_to_qcow2
from undercloud_appliance.steps import StepRunner, StepTimings
from undercloud_appliance.store_layout import IMAGE_NAME, MANIFEST_NAME

log = logging.getLogger(__name__)

BUILD_LOG_NAME = "build.log"
CACHE_ENV = "UNDERCLOUD_APPLIANCE_CACHE"
# Elements every appliance gets, after the distro's base element.
APPLIANCE_ELEMENTS = (
    "appliance-boot",
    "stack-user",
    "undercloud-puddle-repos",
    "undercloud-preinstall",
)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "undercloud-appliance")


@dataclass
class BuildContext:
    """Everything the build steps share."""

    profile: Profile
    output: Path
    requested_puddle: str | None
    puddle_base: str | None
    bake: bool = True
    work: Path = field(init=False)
    build_id: str = field(default_factory=new_build_id)
    puddle_id: str | None = None
    repos: list[dict[str, Any]] = field(default_factory=list)
    elements: list[str] = field(default_factory=list)
    input_digest: str | None = None
    recipe_digest: str | None = None
    facts: DiskFacts | None = None
    image_sha256: str = ""
    smoke: dict[str, Any] | None = None
    ironic_images: dict[str, Any] | None = None
    ironic_image_dirs: dict[str, Path] = field(default_factory=dict)
    background_images: list[BackgroundImage] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def build_log(self) -> Path:
        return self.work / BUILD_LOG_NAME

    @property
    def baking(self) -> bool:
        """Boot once only when there is something to run in the booted image."""
        undercloud = self.profile.data["undercloud"]
        return self.bake and bool(
            undercloud["boot_install_commands"] or undercloud["smoke_commands"]
        )

    @property
    def puddle(self) -> dict[str, Any]:
        puddle = dict(self.profile.data["puddle"])
        if self.puddle_base is not None:
            puddle["base_url"] = self.puddle_base.rstrip("/")
        return puddle


def step_pin_puddle(context: BuildContext) -> None:
    """Resolve a puddle label to an id: the build records the id, never the label."""
    context.puddle_id = resolve_puddle(
        context.puddle, context.requested_puddle, context.profile.data["release"]
    )
    if context.puddle_id:
        context.repos = render_repos(
            context.puddle, context.puddle_id, context.profile.data["release"]
        )
    log.info("    puddle: %s", context.puddle_id or "none (distro mirror only)")


def step_digest_inputs(context: BuildContext) -> None:
    """Everything the image is made from, as one digest (``builders.input_digest``)."""
    context.elements = appliance_elements(context.profile.data)
    inputs = appliance_inputs(context)
    context.input_digest = inputs.digest()
    context.recipe_digest = inputs.recipe_digest()
    log.info("    input digest: %s", context.input_digest)


def appliance_elements(data: dict[str, Any]) -> list[str]:
    """The elements disk-image-create gets, in order."""
    return [data["distro"]["base_element"], *APPLIANCE_ELEMENTS, *data["elements"]]


def appliance_inputs(context: BuildContext) -> ApplianceInputs:
    """The inputs of ``context``'s build, once its puddle is pinned."""
    spec = IronicImagesSpec.from_profile(context.profile.data)
    return ApplianceInputs(
        profile=context.profile.data,
        puddle=context.puddle,
        puddle_id=context.puddle_id,
        repos=context.repos,
        elements=context.elements,
        bake=context.baking,
        dib_version=dib.dib_version(),
        ironic_image_keys={kind: cache_key(kind, spec) for kind in IMAGE_KINDS} if spec else {},
    )


def recipe_digest_of(profile: Profile, bake: bool = True) -> str:
    """The recipe digest a build of ``profile`` would record now (no puddle, no network)."""
    context = BuildContext(profile, Path(), None, None, bake)
    context.elements = appliance_elements(profile.data)
    return appliance_inputs(context).recipe_digest()


def step_render_appliance_data(context: BuildContext) -> None:
    data = context.profile.data
    write_appliance_data(
        context.work / "appliance-data",
        package_manager=data["puddle"]["package_manager"],
        repos=context.repos,
        packages=data["undercloud"]["packages"],
        install_commands=data["undercloud"]["install_commands"],
        user=data["image"]["user"],
        provisioning=data["provisioning"],
    )


def step_build_ironic_images(context: BuildContext) -> None:
    """The deploy image now, the deploy ramdisk in a thread (both from the cache when there).

    The ramdisk builds beside the appliance's DIB run and bake and is
    joined in ``step_wait_for_ironic_images``; the deploy image before them
    (built while the bake's guest ran, its grub-install lost the disk's
    partition table three times in a row: the race ``finish_disk`` retries).
    """
    spec = IronicImagesSpec.from_profile(context.profile.data)
    if spec is None:
        log.info("    ironic_images.agent_version is empty: no deploy ramdisk or image")
        return
    cache = cache_root() / "build"
    context.ironic_images = {"agent_version": spec.agent_version, "constraints": spec.constraints}
    for kind in IMAGE_KINDS:
        if kind in BACKGROUND_IMAGE_KINDS:
            context.background_images.append(BackgroundImage(kind, spec, cache, context.build_log))
    for kind in IMAGE_KINDS:
        if kind not in BACKGROUND_IMAGE_KINDS:
            context.ironic_image_dirs[kind] = ensure_image(kind, spec, cache, context.build_log)


def step_run_diskimage_builder(context: BuildContext) -> None:
    data = context.profile.data
    env = dib.dib_environment(
        data["distro"],
        context.work / "appliance-data",
        cache_root() / "build",
        data.get("environment") or {},
    )
    command = dib.dib_command(context.elements, context.work / "rootfs")
    dib.run_dib(command, env, context.build_log)


def step_assemble_disk(context: BuildContext) -> None:
    place_filesystem_on_disk(
        context.work / "rootfs.raw",
        context.work / "disk.raw",
        int(context.profile.data["image"]["size_gib"]) * 2**30,
    )
    (context.work / "rootfs.raw").unlink()


def step_finish_with_libguestfs(context: BuildContext) -> None:
    data = context.profile.data
    bake_public_key = None
    if context.baking:
        _, bake_public_key = make_bake_key(context.work)
    context.facts = finish_disk(
        context.work / "disk.raw",
        family=data["distro"]["family"],
        hostname=data["image"]["hostname"],
        kernel_args=data["image"]["kernel_args"],
        release_info={
            "profile": context.profile.name,
            "release": data["release"],
            "puddle": context.puddle_id,
            "build_id": context.build_id,
        },
        required_packages=data["undercloud"]["packages"],
        user=data["image"]["user"],
        bake_public_key=bake_public_key,
    )


def step_bake_in_booted_image(context: BuildContext) -> None:
    """Boot once: boot-time install commands, then the smoke test."""
    if not context.baking:
        log.info("    nothing to run in a booted image (or --no-bake): skipped")
        return
    undercloud = context.profile.data["undercloud"]
    result = bake(
        context.work / "disk.raw",
        key=context.work / "bake-key",
        user=context.profile.data["image"]["user"],
        boot_install_commands=undercloud["boot_install_commands"],
        smoke_commands=undercloud["smoke_commands"],
        build_log=context.build_log,
    )
    context.smoke = result.smoke
    if context.smoke and not context.smoke["passed"]:
        failed = [r["command"] for r in context.smoke["results"] if r["returncode"] != 0]
        log.warning("smoke test FAILED (%s): the build cannot be promoted", "; ".join(failed))


def step_wait_for_ironic_images(context: BuildContext) -> None:
    """The ramdisk's thread, if it is still building."""
    for image in context.background_images:
        context.ironic_image_dirs[image.kind] = image.result()
    context.background_images.clear()


def step_seal_after_bake(context: BuildContext) -> None:
    """The Ironic images copied in, then the disk sealed after its bake: one libguestfs launch."""
    if context.ironic_images is None and not context.baking:
        return
    with mounted_os(context.work / "disk.raw", "adding the Ironic images, sealing") as guest:
        if context.ironic_images is not None:
            directories = {kind: context.ironic_image_dirs[kind] for kind in IMAGE_KINDS}
            context.ironic_images.update(add_images_to_disk(guest, directories))
        if context.baking:
            assert context.facts is not None
            context.facts.packages = seal_mounted_os(
                guest, user=context.profile.data["image"]["user"]
            )
    for leftover in ("bake-key", "bake-key.pub"):
        (context.work / leftover).unlink(missing_ok=True)


def step_compress_image(context: BuildContext) -> None:
    compression = context.profile.data["image"]["compression"]
    convert_to_qcow2(
        context.work / "disk.raw",
        context.work / IMAGE_NAME,
        source_format="raw",
        compress=compression != "none",
        compression_type=compression,
        progress_label="qemu-img convert",
        error_type=BuildError,
    )
    (context.work / "disk.raw").unlink()
    context.image_sha256 = file_sha256(context.work / IMAGE_NAME)


# Before the work directory exists: a cache hit must touch nothing.
PREPARING_STEPS = (
    step_pin_puddle,
    step_digest_inputs,
)
BUILD_STEPS = (
    step_render_appliance_data,
    step_build_ironic_images,
    step_run_diskimage_builder,
    step_assemble_disk,
    step_finish_with_libguestfs,
    step_bake_in_booted_image,
    step_wait_for_ironic_images,
    step_seal_after_bake,
    step_compress_image,
)


def manifest_for(context: BuildContext, timings: dict[str, float]) -> Manifest:
    data = context.profile.data
    assert context.facts is not None
    compression = data["image"]["compression"]
    return Manifest(
        build_id=context.build_id,
        release=context.profile.name,
        profile={
            "name": context.profile.name,
            "file": str(context.profile.file),
            "resolved": data,
            "origins": context.profile.origins,
        },
        distro={
            "family": data["distro"]["family"],
            "release": data["distro"]["release"],
            "os": context.facts.os,
        },
        puddle=puddle_section(
            puddle_id=context.puddle_id,
            requested=context.requested_puddle,
            package_manager=data["puddle"]["package_manager"],
            base_url=context.puddle.get("base_url", ""),
            repos=context.repos,
        ),
        dib={
            "version": dib.dib_version(),
            "elements": context.elements,
            "image_types": ["raw"],
        },
        image=ManifestImage.of_file(
            context.work / IMAGE_NAME,
            compression=None if compression == "none" else compression,
            sha256=context.image_sha256,
            error_type=BuildError,
        ),
        packages=context.facts.packages,
        undercloud_packages=list(data["undercloud"]["packages"]),
        timings=timings,
        smoke=context.smoke,
        ironic_images=context.ironic_images,
        input_digest=context.input_digest,
        recipe_digest=context.recipe_digest,
    )


def reusable_build(output: Path, input_digest: str) -> str | None:
    """The id of the build in ``output`` if it is intact and made from ``input_digest``.

    Intact: its manifest is valid and its image has the size and sha256 the
    manifest records (hashing the image takes seconds: about 1 GB for
    ``debian-zed``; a size and mtime check would trust a file edited in
    place).  Otherwise None, and the log says why the build runs.
    """
    if not (output / MANIFEST_NAME).is_file():
        if output.exists() and any(output.iterdir()):
            log.info("build cache: %s holds no %s: rebuilding", output, MANIFEST_NAME)
        return None
    try:
        manifest = Manifest.read(output)
    except ManifestError as error:
        log.info("build cache: %s: rebuilding", error)
        return None
    where = f"{output}'s build {manifest.build_id}"
    if manifest.input_digest is None:
        log.info("build cache: %s records no input digest: rebuilding", where)
        return None
    if manifest.input_digest != input_digest:
        log.info(
            "build cache: input digest differs from %s (%s, now %s): rebuilding",
            where,
            manifest.input_digest,
            input_digest,
        )
        return None
    image = output / IMAGE_NAME
    size = image.stat().st_size if image.is_file() else None
    if size != manifest.image.file_size or file_sha256(image) != manifest.image.sha256:
        log.info("build cache: %s has an image that does not match its manifest: rebuilding", where)
        return None
    return manifest.build_id


def prepare_build(
    profile_name: str,
    requested_puddle: str | None = None,
    puddle_base: str | None = None,
    bake: bool = True,
) -> tuple[BuildContext, StepTimings]:
    """The preparing steps: the profile checked, the puddle pinned, the inputs digested."""
    profile = load_profile(profile_name)
    check_buildable_here(profile, requested_puddle=requested_puddle, puddle_base=puddle_base)
    context = BuildContext(profile, Path(), requested_puddle, puddle_base, bake)
    log.info("build of %s (%s)", profile.name, profile.file)
    return context, StepRunner(PREPARING_STEPS).run(context)


def build(
    profile_name: str,
    output: Path | None = None,
    requested_puddle: str | None = None,
    puddle_base: str | None = None,
    replace: bool = False,
    bake: bool = True,
    rebuild: bool = False,
) -> Path:
    """Build ``profile_name``; return the finished build directory.

    A profile that is invalid or that this host cannot build (see
    ``builders.build_host``) is refused before anything is written.  With
    ``replace``, an intact build of the same inputs already in ``output`` is
    kept as it is and returned (a cache hit), unless ``rebuild``.
    """
    if output is not None:
        output = Path(output).absolute()
        if output.exists() and any(output.iterdir()) and not replace:
            raise BuildError(f"{output} exists and is not empty (use --replace to overwrite it)")
    context, step_timings = prepare_build(profile_name, requested_puddle, puddle_base, bake)
    assert context.input_digest is not None
    profile = context.profile
    output = output or (Path.cwd() / "builds" / context.build_id).absolute()
    context.output = output
    if replace and not rebuild:
        reused = reusable_build(output, context.input_digest)
        if reused is not None:
            log.info(
                "build cache hit: %s holds build %s of the same inputs (input digest %s, "
                "image sha256 checked): kept as it is, nothing rebuilt (--rebuild builds anyway)",
                output,
                reused,
                context.input_digest,
            )
            return output
    output.parent.mkdir(parents=True, exist_ok=True)
    context.work = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    failed_log = output.parent / f"{output.name}.failed.log"
    log.info("building %s (%s) as %s", profile.name, profile.file, context.build_id)
    try:
        context.build_log.write_text(
            f"build {context.build_id} of {profile.name}\ninput digest {context.input_digest}\n"
        )
        timings = StepRunner(BUILD_STEPS, step_timings).run(context).as_dict()
        manifest_for(context, timings).write(context.work / MANIFEST_NAME)
        for leftover in ("appliance-data", "rootfs.d"):
            shutil.rmtree(context.work / leftover, ignore_errors=True)
        context.work.chmod(0o755)
        if output.exists():
            shutil.rmtree(output)
        os.replace(context.work, output)
        failed_log.unlink(missing_ok=True)
    except BaseException as error:
        for image in context.background_images:
            image.abandon()
        if context.build_log.exists():
            shutil.copyfile(context.build_log, failed_log)
        shutil.rmtree(context.work, ignore_errors=True)
        if isinstance(error, ApplianceError):
            raise type(error)(f"{error} [build log: {failed_log}]") from None
        raise
    log.info("built %s in %.0fs: %s", context.build_id, time.monotonic() - context.started, output)
    return output
