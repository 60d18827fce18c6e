"""``fetch``: resolve a build in a store, download, verify and cache its image.

Order: label -> build id (``<release>/<label>/BUILD_ID``), then the
immutable build directory's metadata (:mod:`importer.published_build`:
with a trusted key, the signed ``SHA256SUMS`` first and everything else
checked against it).  If the cache already holds the image's sha256,
nothing is downloaded; the manifest is cached by its own sha256, so the
one handed out is always the one just verified.  The store is any
``undercloud_appliance.stores`` backend (``file://``, ``http(s)://``,
``ssh://``), read through its interface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.cache import ImageCache
from importer.download import download_image
from importer.published_build import read_cached_manifest, read_published_build, read_small_file
from undercloud_appliance.errors import (
    ApplianceError,
    NetworkError,
    NotFoundError,
    StoreError,
)
from undercloud_appliance.store_layout import (
    BUILD_ID_NAME,
    IMAGE_NAME,
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
        cls,
        cache: ImageCache,
        release: str,
        build_id: str,
        sha256: str,
        manifest: dict[str, Any],
        manifest_path: Path,
    ) -> FetchedImage:
        """A build already in ``cache``: nothing transferred."""
        return cls(
            release,
            build_id,
            sha256,
            cache.image_path(sha256),
            manifest,
            manifest_path,
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
        text = read_small_file(store, relpath).decode("utf-8", errors="replace")
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


def _cached_build(
    cache: ImageCache, release: str, build_id: str, trusted_key: str | None
) -> FetchedImage | None:
    """A build fetched (and verified) before, for when the store cannot be reached.

    With a trusted key, only if the signed SHA256SUMS kept with its manifest
    still verifies and lists that manifest.
    """
    known = cache.known_build(release, build_id)
    if known is None:
        return None
    sha256, manifest_path = known
    try:
        manifest = read_cached_manifest(manifest_path, trusted_key)
    except ApplianceError as error:
        log.warning("build %s in the cache is not usable: %s", build_id, error)
        return None
    return FetchedImage.cached(cache, release, build_id, sha256, manifest, manifest_path)


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
        published = read_published_build(store, release, build_id, trusted_key)
    except NetworkError as error:
        offline = _cached_build(cache, release, build_id, trusted_key)
        if offline is None:
            raise
        log.warning("%s; using build %s from the cache", error, build_id)
        return offline
    except NotFoundError as error:
        raise NotFoundError(
            f"no build {build_id} of release {release!r} in {store.display_url} ({error})"
        ) from None
    if trusted_key:
        log.info("%s of %s is signed by %s", SUMS_NAME, build_id, trusted_key)
    sha256 = published.image_sha256

    cache.ensure()
    with cache.locked(sha256):
        if cache.has_image(sha256, published.image_size):
            log.info("build %s is cached: %s", build_id, cache.image_path(sha256))
            manifest_path = cache.keep_manifest(published.manifest_bytes, published.signed_sums)
            cache.remember_build(release, build_id, sha256, manifest_path)
            return FetchedImage.cached(
                cache, release, build_id, sha256, published.manifest, manifest_path
            )
        result = download_image(
            store, f"{build_dir}/{IMAGE_NAME}", cache, sha256, published.image_size
        )
        manifest_path = cache.keep_manifest(published.manifest_bytes, published.signed_sums)
        image_path = cache.commit_partial(sha256)
        cache.remember_build(release, build_id, sha256, manifest_path)
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
        published.manifest,
        manifest_path,
        transferred_bytes=result.transferred_bytes,
        resumed_from=result.resumed_from,
        from_cache=False,
    )
