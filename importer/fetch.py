"""``fetch``: resolve a build in a store, download, verify and cache its image.

Order: label -> build id (``<release>/<label>/BUILD_ID``), then the
immutable build directory's ``undercloud.qcow2.sha256`` and
``manifest.json`` (and ``SHA256SUMS`` + ``.sig`` when a trusted key is
configured).  If the cache already holds that sha256, nothing is
downloaded.  The store is any ``undercloud_appliance.stores`` backend
(``file://``, ``http(s)://``, ``ssh://``), read through its interface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.cache import SHA256_PATTERN, ImageCache
from importer.download import download_image
from importer.signature import verify_detached_signature
from undercloud_appliance.errors import (
    ApplianceError,
    ChecksumError,
    NetworkError,
    NotFoundError,
    StoreError,
)
from undercloud_appliance.manifest import parse_manifest, read_manifest
from undercloud_appliance.store_layout import (
    BUILD_ID_NAME,
    IMAGE_NAME,
    MANIFEST_NAME,
    SHA256_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    build_path,
    check_build_id,
    check_release,
    label_path,
)
from undercloud_appliance.stores import open_store
from undercloud_appliance.stores.base import Store

log = logging.getLogger(__name__)

DEFAULT_LABEL = "latest"


@dataclass(frozen=True)
class FetchedImage:
    release: str
    build_id: str
    sha256: str
    image_path: Path
    manifest: dict[str, Any]
    manifest_path: Path
    transferred_bytes: int
    resumed_from: int
    from_cache: bool

    @classmethod
    def cached(
        cls, cache: ImageCache, release: str, build_id: str, sha256: str, manifest: dict[str, Any]
    ) -> FetchedImage:
        """A build already in ``cache``: nothing transferred."""
        return cls(
            release,
            build_id,
            sha256,
            cache.image_path(sha256),
            manifest,
            cache.manifest_path(sha256),
            transferred_bytes=0,
            resumed_from=0,
            from_cache=True,
        )

    @property
    def puddle_id(self) -> str | None:
        puddle = self.manifest.get("puddle") or {}
        return puddle.get("id")


def resolve_build_id(store: Store, release: str, label: str) -> str:
    relpath = f"{label_path(release, label)}/{BUILD_ID_NAME}"
    try:
        text = store.read_text(relpath)
    except NotFoundError:
        raise NotFoundError(
            f"no build labelled {label!r} for release {release!r} in {store.display_url} "
            f"({relpath} is missing)"
        ) from None
    build_id = text.strip()
    try:
        return check_build_id(build_id)
    except Exception:
        raise StoreError(f"{store.where(relpath)}: not a build id: {build_id[:80]!r}") from None


def read_published_sha256(store: Store, build_dir: str) -> str:
    relpath = f"{build_dir}/{SHA256_NAME}"
    fields = store.read_text(relpath).split()
    if len(fields) < 1 or not SHA256_PATTERN.fullmatch(fields[0].lower()):
        raise StoreError(f"{store.where(relpath)}: does not start with a sha256")
    return fields[0].lower()


def check_signed_sums(store: Store, build_dir: str, sha256: str, fingerprint: str) -> None:
    sums = store.read_bytes(f"{build_dir}/{SUMS_NAME}")
    try:
        signature = store.read_bytes(f"{build_dir}/{SIGNATURE_NAME}")
    except NotFoundError:
        raise ChecksumError(
            f"{store.where(build_dir)}: no {SIGNATURE_NAME}, but trusted key "
            f"{fingerprint} is configured"
        ) from None
    verify_detached_signature(
        sums, signature, fingerprint, store.where(f"{build_dir}/{SIGNATURE_NAME}")
    )
    listed = {
        parts[1].lstrip("*"): parts[0].lower()
        for parts in (line.split() for line in sums.decode(errors="replace").splitlines())
        if len(parts) == 2
    }
    if listed.get(IMAGE_NAME) != sha256:
        raise ChecksumError(
            f"{store.where(build_dir)}/{SUMS_NAME}: signed sha256 of {IMAGE_NAME} is "
            f"{listed.get(IMAGE_NAME)}, {SHA256_NAME} says {sha256}"
        )


def _cached_build(cache: ImageCache, release: str, build_id: str) -> FetchedImage | None:
    """A build fetched (and verified) before, for when the store cannot be reached."""
    sha256 = cache.known_build(release, build_id)
    if sha256 is None:
        return None
    try:
        manifest = read_manifest(cache.manifest_path(sha256))
    except ApplianceError:
        return None
    return FetchedImage.cached(cache, release, build_id, sha256, manifest)


def fetch_image(
    store_url: str,
    release: str,
    *,
    label: str | None = None,
    build_id: str | None = None,
    cache: ImageCache | None = None,
    trusted_key: str | None = None,
) -> FetchedImage:
    """Make sure the build's verified image is cached; return where it is."""
    cache = cache or ImageCache.default()
    check_release(release)
    store = open_store(store_url)
    try:
        return _fetch(store, release, label, build_id, cache, trusted_key)
    finally:
        store.close()


def _fetch(
    store: Store,
    release: str,
    label: str | None,
    build_id: str | None,
    cache: ImageCache,
    trusted_key: str | None,
) -> FetchedImage:
    if build_id is None:
        build_id = resolve_build_id(store, release, label or DEFAULT_LABEL)
        log.info("label %s of %s is build %s", label or DEFAULT_LABEL, release, build_id)
    build_dir = build_path(release, build_id)
    try:
        sha256 = read_published_sha256(store, build_dir)
    except NetworkError as error:
        offline = _cached_build(cache, release, build_id) if not trusted_key else None
        if offline is None:
            raise
        log.warning("%s; using build %s from the cache", error, build_id)
        return offline
    except NotFoundError:
        raise NotFoundError(
            f"no build {build_id} of release {release!r} in {store.display_url} "
            f"({build_dir}/{SHA256_NAME} is missing)"
        ) from None
    manifest_text = store.read_text(f"{build_dir}/{MANIFEST_NAME}")
    manifest = parse_manifest(manifest_text, store.where(f"{build_dir}/{MANIFEST_NAME}"))
    if manifest["build_id"] != build_id:
        raise StoreError(
            f"{store.where(build_dir)}/{MANIFEST_NAME}: describes build "
            f"{manifest['build_id']}, not {build_id}"
        )
    if manifest["image"]["sha256"].lower() != sha256:
        raise ChecksumError(
            f"{store.where(build_dir)}: {SHA256_NAME} says {sha256}, "
            f"{MANIFEST_NAME} says {manifest['image']['sha256']}"
        )
    if trusted_key:
        check_signed_sums(store, build_dir, sha256, trusted_key)
        log.info("SHA256SUMS of %s is signed by %s", build_id, trusted_key)

    expected_size = manifest["image"].get("file_size")
    cache.ensure()
    with cache.locked(sha256):
        if cache.has_image(sha256, expected_size):
            log.info("build %s is cached: %s", build_id, cache.image_path(sha256))
            cache.remember_build(release, build_id, sha256)
            return FetchedImage.cached(cache, release, build_id, sha256, manifest)
        result = download_image(store, f"{build_dir}/{IMAGE_NAME}", cache, sha256, expected_size)
        image_path = cache.commit_partial(sha256, manifest_text)
        cache.remember_build(release, build_id, sha256)
    log.info(
        "fetched build %s: %d bytes transferred%s, sha256 verified",
        build_id,
        result.transferred_bytes,
        f" (resumed at {result.resumed_from})" if result.resumed_from else "",
    )
    return FetchedImage(
        release,
        build_id,
        sha256,
        image_path,
        manifest,
        cache.manifest_path(sha256),
        transferred_bytes=result.transferred_bytes,
        resumed_from=result.resumed_from,
        from_cache=False,
    )
