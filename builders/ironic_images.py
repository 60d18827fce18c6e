"""The deploy ramdisk and the deploy image Ironic needs, built with diskimage-builder.

* The ramdisk: ironic-python-agent (the release matching the profile's
  Ironic, from its PyPI sdist) built by ironic-python-agent-builder's
  elements on the profile's distro, trimmed by ``ironic-ramdisk-trim``.
  DIB's source-repositories would clone IPA and openstack/requirements from
  opendev.org; both are local git repositories made here instead (the sdist,
  and the upper-constraints file committed under ``builders/constraints``).
* The deploy image: a small whole-disk image (the distro's minimal element,
  the appliance's boot element, glean for the config drive) assembled like
  the appliance disk (``builders.disk``) and compressed to qcow2.

Each is built once per set of inputs and kept in the build cache under
``ironic-images/<kind>-<key>``: a rebuild of the appliance with the same
inputs reuses them.  The appliance build makes the deploy image first and
the ramdisk in a thread beside its own DIB run and bake
(``BackgroundImage``), copies both into the baked disk with libguestfs
(``add_images_to_disk``) and records them in its manifest.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builders import dib
from builders import disk as disk_module
from builders.disk import finish_disk, place_filesystem_on_disk
from builders.input_digest import add_tree
from builders.profiles.settings import CONSTRAINTS_DIR
from undercloud_appliance.errors import BuildError
from undercloud_appliance.manifest import file_sha256
from undercloud_appliance.qcow2 import convert_to_qcow2

log = logging.getLogger(__name__)

# Where the appliance keeps them; nginx serves IMAGES_DIR as /images/.
IMAGES_DIR = "/srv/ironic/images"
RAMDISK_KERNEL = "ipa.kernel"
RAMDISK_INITRAMFS = "ipa.initramfs"
DEPLOY_IMAGE = "deploy-image.qcow2"
RAMDISK_ELEMENTS = ("host-ca-trust", "ironic-ramdisk-trim")
DEPLOY_IMAGE_ELEMENTS = ("deploy-image",)
DEPLOY_IMAGE_HOSTNAME = "deployed-node"
# Every Debian-family disk the project makes boots with its console on serial.
DEPLOY_IMAGE_KERNEL_ARGS = ("console=tty0", "console=ttyS0,115200", "net.ifnames=0")
# Our own elements each image is made with: inputs of its cache key, so a
# change to one rebuilds that image.
OUR_ELEMENTS = {
    "ramdisk": ("host-ca-trust", "ironic-ramdisk-trim"),
    "deploy-image": ("appliance-boot", "host-ca-trust", "deploy-image"),
}


@dataclass(frozen=True)
class IronicImagesSpec:
    """What the two images are built from (the profile's ``ironic_images`` and ``distro``)."""

    agent_version: str
    constraints: str
    deploy_image_size_gib: int
    distro: Mapping[str, Any]

    @classmethod
    def from_profile(cls, data: Mapping[str, Any]) -> IronicImagesSpec | None:
        settings = data["ironic_images"]
        if not settings["agent_version"]:
            return None
        return cls(
            agent_version=settings["agent_version"],
            constraints=settings["constraints"],
            deploy_image_size_gib=settings["deploy_image_size_gib"],
            distro=dict(data["distro"]),
        )

    @property
    def constraints_file(self) -> Path:
        return CONSTRAINTS_DIR / f"upper-constraints-{self.constraints}.txt"


def cache_key(kind: str, spec: IronicImagesSpec) -> str:
    """A digest of everything the ``kind`` image is made from."""
    digest = hashlib.sha256(kind.encode())
    digest.update(json.dumps(dict(spec.distro), sort_keys=True).encode())
    digest.update(dib.dib_version().encode())
    for element in OUR_ELEMENTS[kind]:
        add_tree(digest, dib.ELEMENTS_DIR / element)
    if kind == "ramdisk":
        digest.update(spec.agent_version.encode())
        digest.update(spec.constraints_file.read_bytes())
        digest.update(_agent_builder_version().encode())
    else:
        digest.update(str(spec.deploy_image_size_gib).encode())
        # How the disk is assembled: this module's recipe and builders.disk.
        digest.update(inspect.getsource(build_deploy_image).encode())
        digest.update(inspect.getsource(disk_module).encode())
    return digest.hexdigest()[:16]


def _agent_builder_version() -> str:
    from importlib.metadata import version

    return version("ironic-python-agent-builder")


def _agent_builder_command() -> str:
    candidate = Path(sys.executable).parent / "ironic-python-agent-builder"
    if not candidate.exists():
        raise BuildError("ironic-python-agent-builder not found: install it in this environment")
    return str(candidate)


def _git(directory: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=undercloud-appliance", "-c", "user.email=builder@localhost",
         *args],
        cwd=directory, check=True, capture_output=True, text=True,
    )  # fmt: skip


def _local_repository(directory: Path, message: str, tag: str | None = None) -> None:
    """``directory`` as a git repository with one commit on branch master.

    DIB's source-repositories fetches ``refs/heads/<ref>``, so the ref is a
    branch; a lightweight tag gives pbr its version (an annotated one
    cannot be fetched into a branch ref).
    """
    _git(directory, "init", "-q", "-b", "master")
    _git(directory, "add", "-A")
    _git(directory, "commit", "-q", "-m", message)
    if tag:
        _git(directory, "tag", tag)


def _unpack_sdist(archive_path: Path, destination: Path) -> None:
    """Unpack as ours (git refuses a repository owned by the archive's uid 1000)."""
    with tarfile.open(archive_path) as archive:
        members = archive.getmembers()
        for member in members:
            if member.name.startswith("/") or ".." in Path(member.name).parts:
                raise BuildError(f"{archive_path.name}: unsafe path {member.name!r} in the sdist")
            if not (member.isfile() or member.isdir() or member.issym()):
                raise BuildError(f"{archive_path.name}: unexpected entry {member.name!r}")
            member.uid, member.gid = os.getuid(), os.getgid()
            member.uname = member.gname = ""
        archive.extractall(destination, members=members)


def prepare_agent_sources(spec: IronicImagesSpec, work: Path) -> dict[str, str]:
    """Local git repositories for IPA and the constraints; DIB_REPO* variables naming them."""
    downloads = work / "sdist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--dest", str(downloads), f"ironic-python-agent=={spec.agent_version}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    archives = sorted(downloads.glob("ironic*python*agent-*.tar.gz"))
    if result.returncode != 0 or not archives:
        detail = (result.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
        raise BuildError(
            f"ironic_images.agent_version {spec.agent_version!r}: "
            f"cannot download ironic-python-agent from PyPI: {detail}"
        )
    _unpack_sdist(archives[0], work / "unpacked")
    (unpacked,) = (work / "unpacked").iterdir()
    agent = work / "ironic-python-agent"
    unpacked.rename(agent)
    _local_repository(agent, f"ironic-python-agent {spec.agent_version} (PyPI sdist)",
                      tag=spec.agent_version)  # fmt: skip
    requirements = work / "requirements"
    requirements.mkdir()
    shutil.copyfile(spec.constraints_file, requirements / "upper-constraints.txt")
    _local_repository(requirements, f"upper-constraints {spec.constraints}")
    return {
        "DIB_REPOLOCATION_ironic_python_agent": str(agent),
        "DIB_REPOREF_ironic_python_agent": "master",
        "DIB_REPOLOCATION_requirements": str(requirements),
        "DIB_REPOREF_requirements": "master",
    }


def _image_environment(spec: IronicImagesSpec, cache_dir: Path, kind: str) -> dict[str, str]:
    # A DIB cache of each image's own, apart from the appliance's and each
    # other's: DIB runs at the same time (the ramdisk beside the appliance,
    # two builds on one host) must not share apt's archive lock or
    # debootstrap's tarball.
    env = dib.dib_environment(
        spec.distro, Path("/nonexistent"), cache_dir / "ironic-images" / f"dib-cache-{kind}", {}
    )
    del env["DIB_APPLIANCE_DATA"]
    # simple-init (glean) lists a git source on opendev.org; "pip" skips that
    # clone and glean comes from PyPI, which is what the element installs anyway.
    env["DIB_INSTALLTYPE_glean"] = "pip"
    # pip settings of the host (find-links, a venv) mean nothing in the chroot.
    for name in ("PIP_FIND_LINKS", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def build_ramdisk(
    spec: IronicImagesSpec,
    cache_dir: Path,
    work: Path,
    build_log: Path,
    cancel: threading.Event | None = None,
) -> None:
    """Build ``RAMDISK_KERNEL`` and ``RAMDISK_INITRAMFS`` into ``work``."""
    env = _image_environment(spec, cache_dir, "ramdisk")
    env.update(prepare_agent_sources(spec, work / "sources"))
    command = [
        _agent_builder_command(),
        "-o", str(work / RAMDISK_KERNEL.removesuffix(".kernel")),
        "-r", str(spec.distro["release"]),
        *[arg for element in RAMDISK_ELEMENTS for arg in ("-e", element)],
        str(spec.distro["base_element"]),
    ]  # fmt: skip
    dib.run_dib(command, env, build_log, label="ramdisk dib", cancel=cancel)


def build_deploy_image(
    spec: IronicImagesSpec,
    cache_dir: Path,
    work: Path,
    build_log: Path,
    cancel: threading.Event | None = None,
) -> None:
    """Build ``DEPLOY_IMAGE`` (whole disk, MBR + GRUB, qcow2) into ``work``."""
    env = _image_environment(spec, cache_dir, "deploy-image")
    elements = [str(spec.distro["base_element"]), *DEPLOY_IMAGE_ELEMENTS]
    dib.run_dib(
        dib.dib_command(elements, work / "rootfs"),
        env,
        build_log,
        label="deploy-image dib",
        cancel=cancel,
    )
    place_filesystem_on_disk(
        work / "rootfs.raw", work / "disk.raw", spec.deploy_image_size_gib * 2**30
    )
    (work / "rootfs.raw").unlink()
    finish_disk(
        work / "disk.raw",
        family=str(spec.distro["family"]),
        hostname=DEPLOY_IMAGE_HOSTNAME,
        kernel_args=DEPLOY_IMAGE_KERNEL_ARGS,
        release_info={"image": "deploy image", "distro": dict(spec.distro)},
        required_packages=[],
    )
    convert_to_qcow2(
        work / "disk.raw", work / DEPLOY_IMAGE, source_format="raw", compress=True,
        error_type=BuildError,
    )  # fmt: skip
    (work / "disk.raw").unlink()


BUILDERS: dict[str, tuple[Callable[..., None], tuple[str, ...]]] = {
    "ramdisk": (build_ramdisk, (RAMDISK_KERNEL, RAMDISK_INITRAMFS)),
    "deploy-image": (build_deploy_image, (DEPLOY_IMAGE,)),
}
IMAGE_KINDS = tuple(BUILDERS)
# Built in a thread beside the appliance (BackgroundImage); the others before it.
BACKGROUND_IMAGE_KINDS = ("ramdisk",)


def ensure_image(
    kind: str,
    spec: IronicImagesSpec,
    cache_dir: Path,
    build_log: Path,
    cancel: threading.Event | None = None,
) -> Path:
    """The cached ``kind`` image directory for ``spec``, built first if missing.

    Built in a temporary sibling renamed into place when complete, so a
    failed or interrupted build never leaves a half-made cache entry.
    """
    builder, files = BUILDERS[kind]
    key = cache_key(kind, spec)
    final = cache_dir / "ironic-images" / f"{kind}-{key}"
    if all((final / name).is_file() for name in files):
        log.info("    %s: reusing %s", kind, final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        with build_log.open("a", encoding="utf-8") as log_file:
            log_file.write(f"== {kind} ({key})\n")
        builder(spec, cache_dir, work, build_log, cancel)
        kept = work.with_name(work.name + "-files")
        kept.mkdir()
        for name in files:
            (work / name).rename(kept / name)
        shutil.rmtree(work)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(kept, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(work.with_name(work.name + "-files"), ignore_errors=True)
        raise
    log.info("    %s: built %s", kind, final)
    return final


class BackgroundImage:
    """One image, cached or built, in a thread beside the appliance build.

    The ramdisk's DIB run is mostly downloads, dpkg, pip and compression on
    one core; the appliance's DIB run and its bake (an emulated guest) leave
    the other core idle much of the time: together they take less wall time
    than one after the other.  Only the ramdisk: the deploy image's
    grub-install lost its partition table three times in a row while the
    bake's guest ran.  ``abandon`` stops the run when the build fails.
    """

    def __init__(self, kind: str, spec: IronicImagesSpec, cache_dir: Path, build_log: Path) -> None:
        self.kind = kind
        self._cancel = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=kind)
        self._future = self._executor.submit(
            ensure_image, kind, spec, cache_dir, build_log, self._cancel
        )

    def result(self) -> Path:
        """Wait for the image; its cache directory (raises what its build raised)."""
        try:
            return self._future.result()
        finally:
            self._executor.shutdown()

    def abandon(self) -> None:
        """Stop the build (at DIB's next output line) and wait for it to clean up."""
        self._cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)


def add_images_to_disk(handle: Any, directories: Mapping[str, Path]) -> dict[str, Any]:
    """Copy the images into ``IMAGES_DIR`` of a disk (``disk.mounted_os``), with a SHA256SUMS.

    Returns the manifest's ``ironic_images`` file list: name -> kind, size,
    sha256 and the cache entry it came from.
    """
    files: dict[str, Any] = {}
    for kind, directory in directories.items():
        for path in sorted(directory.iterdir()):
            files[path.name] = {
                "kind": kind,
                "size": path.stat().st_size,
                "sha256": file_sha256(path),
                "cache": directory.name,
                "source": path,
            }
    sums = "".join(f"{entry['sha256']}  {name}\n" for name, entry in sorted(files.items()))
    handle.mkdir_p(IMAGES_DIR)
    handle.chmod(0o755, IMAGES_DIR)
    for name, entry in files.items():
        target = f"{IMAGES_DIR}/{name}"
        handle.upload(str(entry.pop("source")), target)
        handle.chmod(0o644, target)
    handle.write(f"{IMAGES_DIR}/SHA256SUMS", sums)
    handle.chmod(0o644, f"{IMAGES_DIR}/SHA256SUMS")
    return {"directory": IMAGES_DIR, "files": files}
