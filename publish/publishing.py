"""``publish BUILD_DIR``: upload one build into ``<store>/<release>/<build-id>/``.

Steps (timed, see undercloud_appliance.steps): read the manifest and check
the image's size locally, check the store, stage a hidden directory, upload
the image while hashing it (one read pass), compare with the manifest,
write the checksum files (and signature), commit by renaming the directory.
Any failure removes the staging directory: a build is complete or absent.

A build already in the store is never changed: publishing it again is a
no-op when the store's ``SHA256SUMS`` lists the checksums this build
directory would publish (image, manifest.json, BUILD_ID), and an error when
the store holds other content under the same build id.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from undercloud_appliance.checksum_files import (
    checksum_line,
    parse_sums,
    render_sums,
    sha256_hex,
)
from undercloud_appliance.errors import (
    ApplianceError,
    ChecksumError,
    NetworkError,
    NotFoundError,
    StoreError,
)
from undercloud_appliance.manifest import dump_manifest, read_manifest
from undercloud_appliance.retry_policies import transient_failures
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
from undercloud_appliance.stores.base import Store
from undercloud_appliance.stores.credentials import redact_urls_in
from undercloud_appliance.stores.digests import Digests, HashedChunks, open_for_streaming

log = logging.getLogger(__name__)

PROGRESS_MIN_BYTES = 64 * 1024 * 1024
UPLOAD_ATTEMPTS = 3


@dataclass
class PublishContext:
    """What the publish steps share: the build, the store and what they found."""

    build_dir: Path
    store: Store
    sign_key: str | None = None
    show_progress: bool = True
    manifest: dict[str, Any] = field(default_factory=dict)
    manifest_bytes: bytes = b""
    staging: str | None = None
    digests: Digests | None = None
    already_published: bool = False

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
        return self.store.where(build_path(self.release, self.build_id))


def step_read_manifest(context: PublishContext) -> None:
    if not context.build_dir.is_dir():
        raise NotFoundError(f"{context.build_dir}: no such build directory")
    manifest_path = context.build_dir / MANIFEST_NAME
    context.manifest = read_manifest(manifest_path)
    context.manifest_bytes = manifest_path.read_bytes()
    if redact_urls_in(context.manifest) != context.manifest:
        # Written before manifests were redacted, or edited by hand: a URL's
        # password is never published.
        context.manifest_bytes = dump_manifest(context.manifest).encode()
    check_release(context.release)
    check_build_id(context.build_id)
    image_field = context.manifest["image"]
    if image_field["filename"] != IMAGE_NAME:
        raise ApplianceError(
            f"{manifest_path}: field 'image.filename' is {image_field['filename']!r}, "
            f"expected {IMAGE_NAME!r}"
        )
    try:
        size = context.image.stat().st_size
    except FileNotFoundError:
        raise NotFoundError(f"{context.image}: no such image in the build directory") from None
    if size != image_field["file_size"]:
        raise ChecksumError(
            f"{context.image}: {size} bytes but manifest.json says image.file_size "
            f"{image_field['file_size']}; nothing published"
        )


def step_check_store(context: PublishContext) -> None:
    """A build already published (its BUILD_ID is written last) is compared, never changed."""
    build = build_path(context.release, context.build_id)
    if not context.store.exists(f"{build}/{BUILD_ID_NAME}"):
        return
    # What this build directory would list in SHA256SUMS, from its manifest:
    # the image is not read again (publish hashes it only when it uploads it).
    expected = {
        IMAGE_NAME: context.manifest["image"]["sha256"],
        MANIFEST_NAME: sha256_hex(context.manifest_bytes),
        BUILD_ID_NAME: sha256_hex(f"{context.build_id}\n".encode()),
    }
    try:
        stored = parse_sums(
            context.store.read_text(f"{build}/{SUMS_NAME}"), f"{context.where}/{SUMS_NAME}"
        )
    except NotFoundError:
        stored = {}
    differing = [name for name, sha256 in expected.items() if stored.get(name) != sha256]
    if differing:
        raise ApplianceError(
            f"{context.where}: build {context.build_id} is already published with other "
            f"content ({', '.join(differing)} differ from the store's {SUMS_NAME}); "
            "nothing published"
        )
    if context.sign_key and not context.store.exists(f"{build}/{SIGNATURE_NAME}"):
        raise ApplianceError(
            f"{context.where}: build {context.build_id} is already published unsigned; "
            f"a published build never changes: nothing published, {SIGNATURE_NAME} not added"
        )
    context.already_published = True
    log.info(
        "%s: build %s already published, identical (%s in the store's %s): nothing uploaded",
        context.where,
        context.build_id,
        ", ".join(expected),
        SUMS_NAME,
    )


def step_stage(context: PublishContext) -> None:
    context.staging = context.store.make_staging_directory(context.release, context.build_id)
    log.debug("staging in %s", context.staging)


def step_upload_image(context: PublishContext) -> None:
    assert context.staging is not None
    target = f"{context.staging}/{IMAGE_NAME}"
    size = context.manifest["image"]["file_size"]
    # Each try sends the whole image again, read and hashed again.
    retrying = transient_failures(NetworkError, UPLOAD_ATTEMPTS, what=f"upload of {IMAGE_NAME}")
    context.digests = retrying(_upload_once, context, target, size)


def _upload_once(context: PublishContext, target: str, size: int) -> Digests:
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
            disable=None if context.show_progress and size >= PROGRESS_MIN_BYTES else True,
        ) as bar,
        open_for_streaming(context.image) as source,
        HashedChunks(source, bar.update) as chunks,
    ):
        context.store.upload(target, chunks, size)
    if chunks.digests is None:
        raise StoreError(f"{context.store.where(target)}: the upload ended before the image did")
    return chunks.digests


def step_verify_checksums(context: PublishContext) -> None:
    assert context.digests is not None and context.staging is not None
    image_field = context.manifest["image"]
    if context.digests.size != image_field["file_size"]:
        raise ChecksumError(
            f"{context.image}: read {context.digests.size} bytes, manifest.json says "
            f"{image_field['file_size']} (file changed while publishing?); nothing published"
        )
    if context.digests.sha256 != image_field["sha256"]:
        raise ChecksumError(
            f"{context.image}: sha256 is {context.digests.sha256} but manifest.json says "
            f"image.sha256 {image_field['sha256']}; nothing published"
        )
    digests = context.digests
    context.store.verify_upload(f"{context.staging}/{IMAGE_NAME}", digests.size, digests.sha256)


def step_write_checksum_files(context: PublishContext) -> None:
    assert context.digests is not None and context.staging is not None
    build_id_bytes = f"{context.build_id}\n".encode()
    # Everything the importer trusts (SIGNED_NAMES), so the signature covers
    # the commands the manifest carries and the build id, not the image alone.
    sums = render_sums(
        {
            IMAGE_NAME: context.digests.sha256,
            MANIFEST_NAME: sha256_hex(context.manifest_bytes),
            BUILD_ID_NAME: sha256_hex(build_id_bytes),
        }
    ).encode()
    files = {
        SHA256_NAME: checksum_line(context.digests.sha256, IMAGE_NAME).encode(),
        MD5_NAME: checksum_line(context.digests.md5, IMAGE_NAME).encode(),
        MANIFEST_NAME: context.manifest_bytes,
        SUMS_NAME: sums,
        BUILD_ID_NAME: build_id_bytes,
    }
    if context.sign_key:
        from publish.signing import sign_detached

        files[SIGNATURE_NAME] = sign_detached(sums, context.sign_key)
    context.store.write_files(context.staging, files)


def step_commit(context: PublishContext) -> None:
    assert context.staging is not None
    context.store.commit_directory(context.staging, build_path(context.release, context.build_id))
    context.staging = None


# Decide first: a build already published stops after these.
CHECKING_STEPS = [
    step_read_manifest,
    step_check_store,
]
PUBLISHING_STEPS = [
    step_stage,
    step_upload_image,
    step_verify_checksums,
    step_write_checksum_files,
    step_commit,
]


def publish_build(
    build_dir: Path, store: Store, sign_key: str | None = None, show_progress: bool = True
) -> tuple[PublishContext, StepTimings]:
    """Publish ``build_dir``; on any failure nothing is left under a final name.

    ``context.already_published`` says the store held this very build already.
    """
    context = PublishContext(Path(build_dir), store, sign_key, show_progress)
    try:
        timings = StepRunner(CHECKING_STEPS).run(context)
        if not context.already_published:
            StepRunner(PUBLISHING_STEPS, timings).run(context)
    finally:
        if context.staging is not None:
            _remove_staging(context)
    return context, timings


def _remove_staging(context: PublishContext) -> None:
    assert context.staging is not None
    try:
        context.store.remove_tree(context.staging)
    except ApplianceError as error:
        # The original failure matters more; a stale hidden directory is
        # harmless (invisible to readers) and `prune` clears old ones.
        log.warning("could not remove staging directory %s: %s", context.staging, error)
