"""``publish BUILD_DIR``: upload one build into ``<store>/<release>/<build-id>/``.

Steps (timed, see undercloud_appliance.steps): read the manifest and check
the image's size locally, check the store, stage a hidden directory, upload
the image while hashing it (one read pass), compare with the manifest,
write the checksum files (and signature), commit by renaming the directory.
Any failure removes the staging directory: a build is complete or absent.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publish.checksum_files import checksum_line, render_sums, sha256_hex
from publish.digests import Digests, copy_with_digests, open_for_streaming
from publish.stores.base import Store
from undercloud_appliance.errors import ApplianceError, ChecksumError, NetworkError, NotFoundError
from undercloud_appliance.manifest import read_manifest
from undercloud_appliance.steps import StepRunner, StepTimings
from undercloud_appliance.store_layout import (
    BUILD_ID_NAME,
    IMAGE_NAME,
    MANIFEST_NAME,
    MD5_NAME,
    SHA256_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    build_path,
    check_build_id,
    check_release,
)

log = logging.getLogger(__name__)

PROGRESS_MIN_BYTES = 64 * 1024 * 1024
UPLOAD_ATTEMPTS = 3


@dataclass
class PublishJob:
    build_dir: Path
    store: Store
    sign_key: str | None = None
    show_progress: bool = True
    manifest: dict[str, Any] = field(default_factory=dict)
    manifest_bytes: bytes = b""
    staging: str | None = None
    digests: Digests | None = None

    @property
    def release(self) -> str:
        return self.manifest["release"]

    @property
    def build_id(self) -> str:
        return self.manifest["build_id"]

    @property
    def image(self) -> Path:
        return self.build_dir / IMAGE_NAME

    @property
    def where(self) -> str:
        return f"{self.store.display_url.rstrip('/')}/{build_path(self.release, self.build_id)}"


def step_read_manifest(job: PublishJob) -> None:
    if not job.build_dir.is_dir():
        raise NotFoundError(f"{job.build_dir}: no such build directory")
    manifest_path = job.build_dir / MANIFEST_NAME
    job.manifest = read_manifest(manifest_path)
    job.manifest_bytes = manifest_path.read_bytes()
    check_release(job.release)
    check_build_id(job.build_id)
    image_field = job.manifest["image"]
    if image_field["filename"] != IMAGE_NAME:
        raise ApplianceError(
            f"{manifest_path}: field 'image.filename' is {image_field['filename']!r}, "
            f"expected {IMAGE_NAME!r}"
        )
    try:
        size = job.image.stat().st_size
    except FileNotFoundError:
        raise NotFoundError(f"{job.image}: no such image in the build directory") from None
    if size != image_field["file_size"]:
        raise ChecksumError(
            f"{job.image}: {size} bytes but manifest.json says image.file_size "
            f"{image_field['file_size']}; nothing published"
        )


def step_check_store(job: PublishJob) -> None:
    if job.store.file_size(f"{build_path(job.release, job.build_id)}/{BUILD_ID_NAME}") is not None:
        raise ApplianceError(f"{job.where}: build {job.build_id} is already published")


def step_stage(job: PublishJob) -> None:
    job.staging = job.store.make_staging_directory(job.release, job.build_id)
    log.debug("staging in %s", job.staging)


def step_upload_image(job: PublishJob) -> None:
    assert job.staging is not None
    target = f"{job.staging}/{IMAGE_NAME}"
    size = job.manifest["image"]["file_size"]
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            job.digests = _upload_once(job, target, size)
            return
        except NetworkError as error:
            if attempt == UPLOAD_ATTEMPTS:
                raise
            log.info("upload failed (%s); retrying (%d/%d)", error, attempt, UPLOAD_ATTEMPTS)


def _upload_once(job: PublishJob, target: str, size: int) -> Digests:
    from tqdm import tqdm

    with (
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=IMAGE_NAME,
            file=sys.stderr,
            # None: shown on a terminal only, never in CI logs.
            disable=None if job.show_progress and size >= PROGRESS_MIN_BYTES else True,
        ) as bar,
        open_for_streaming(job.image) as source,
        job.store.open_upload(target, size) as sink,
    ):
        return copy_with_digests(source, sink.write, bar.update)


def step_verify_checksums(job: PublishJob) -> None:
    assert job.digests is not None and job.staging is not None
    image_field = job.manifest["image"]
    if job.digests.size != image_field["file_size"]:
        raise ChecksumError(
            f"{job.image}: read {job.digests.size} bytes, manifest.json says "
            f"{image_field['file_size']} (file changed while publishing?); nothing published"
        )
    if job.digests.sha256 != image_field["sha256"]:
        raise ChecksumError(
            f"{job.image}: sha256 is {job.digests.sha256} but manifest.json says "
            f"image.sha256 {image_field['sha256']}; nothing published"
        )
    job.store.verify_upload(f"{job.staging}/{IMAGE_NAME}", job.digests.size, job.digests.sha256)


def step_write_checksum_files(job: PublishJob) -> None:
    assert job.digests is not None and job.staging is not None
    build_id_bytes = f"{job.build_id}\n".encode()
    sums = render_sums(
        {IMAGE_NAME: job.digests.sha256, BUILD_ID_NAME: sha256_hex(build_id_bytes)}
    ).encode()
    files = {
        SHA256_NAME: checksum_line(job.digests.sha256, IMAGE_NAME).encode(),
        MD5_NAME: checksum_line(job.digests.md5, IMAGE_NAME).encode(),
        MANIFEST_NAME: job.manifest_bytes,
        SUMS_NAME: sums,
        BUILD_ID_NAME: build_id_bytes,
    }
    if job.sign_key:
        from publish.signing import sign_detached

        files[SIGNATURE_NAME] = sign_detached(sums, job.sign_key)
    job.store.write_files(job.staging, files)


def step_commit(job: PublishJob) -> None:
    assert job.staging is not None
    job.store.commit_directory(job.staging, build_path(job.release, job.build_id))
    job.staging = None


def publish_build(
    build_dir: Path, store: Store, sign_key: str | None = None, show_progress: bool = True
) -> tuple[PublishJob, StepTimings]:
    """Publish ``build_dir``; on any failure nothing is left under a final name."""
    job = PublishJob(Path(build_dir), store, sign_key, show_progress)
    runner: StepRunner[PublishJob] = StepRunner(
        [
            step_read_manifest,
            step_check_store,
            step_stage,
            step_upload_image,
            step_verify_checksums,
            step_write_checksum_files,
            step_commit,
        ]
    )
    try:
        timings = runner.run(job)
    finally:
        if job.staging is not None:
            _remove_staging(job)
    return job, timings


def _remove_staging(job: PublishJob) -> None:
    assert job.staging is not None
    try:
        job.store.remove_tree(job.staging)
    except ApplianceError as error:
        # The original failure matters more; a stale hidden directory is
        # harmless (invisible to readers) and `prune` clears old ones.
        log.warning("could not remove staging directory %s: %s", job.staging, error)
