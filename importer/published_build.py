"""A published build's small files, read with size limits and checked before use.

With a trusted key, ``SHA256SUMS`` and its detached signature are read
first and the signature verified; then ``BUILD_ID`` and ``manifest.json``
are read and their sha256 compared with the signed list *before* either is
parsed.  The signed ``BUILD_ID`` must name the build asked for and the
signed manifest must describe it (build id, release, image sha256): a
store cannot serve an old signed build under a newer build id, a label's
target is the immutable build directory its ``BUILD_ID`` names, and the
commands a manifest carries (smoke, update, upgrade) are the ones signed.

Without a trusted key, builds are read as before signing covered them:
``undercloud.qcow2.sha256`` and ``manifest.json``, checked against each
other only.

A manifest kept in the cache is checked the same way each time it is used
with a trusted key (:func:`read_cached_manifest`): its bytes against the
signed ``SHA256SUMS`` kept beside it, and that file's signature again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.cache import SHA256_PATTERN, signed_sums_paths
from importer.signature import verify_detached_signature
from undercloud_appliance.checksum_files import parse_sums
from undercloud_appliance.errors import ChecksumError, NotFoundError, StoreError
from undercloud_appliance.manifest import parse_manifest
from undercloud_appliance.store_layout import (
    BUILD_ID_NAME,
    IMAGE_NAME,
    MANIFEST_NAME,
    SHA256_NAME,
    SIGNATURE_NAME,
    SIGNED_NAMES,
    SMALL_FILE_LIMITS,
    SUMS_NAME,
    build_path,
)
from undercloud_appliance.stores.base import Store


@dataclass(frozen=True)
class PublishedBuild:
    """What a build directory says about itself, checked as far as the key allows."""

    release: str
    build_id: str
    image_sha256: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    #: (SHA256SUMS, its signature) when a trusted key vouched for the above.
    signed_sums: tuple[bytes, bytes] | None

    @property
    def image_size(self) -> int:
        return self.manifest["image"]["file_size"]


def read_small_file(store: Store, relpath: str) -> bytes:
    """A store file of the layout, never more than its limit (UntrustedStoreData beyond)."""
    return store.read_bytes(relpath, SMALL_FILE_LIMITS[relpath.rsplit("/", 1)[-1]])


def read_published_build(
    store: Store, release: str, build_id: str, trusted_key: str | None
) -> PublishedBuild:
    """Read ``<release>/<build_id>``'s metadata; signed and checked when ``trusted_key``."""
    build_dir = build_path(release, build_id)
    if trusted_key:
        sums, signature, listed = _verified_sums(store, build_dir, trusted_key)
        build_id_bytes = _listed_file(store, build_dir, BUILD_ID_NAME, listed)
        signed_id = build_id_bytes.decode(errors="replace").strip()
        if signed_id != build_id:
            raise ChecksumError(
                f"{store.where(build_dir)}/{BUILD_ID_NAME}: signed for build {signed_id[:80]!r}, "
                f"not {build_id} (an old build served under a newer id?); refused"
            )
        manifest_bytes = _listed_file(store, build_dir, MANIFEST_NAME, listed)
        image_sha256 = listed[IMAGE_NAME]
        signed_sums: tuple[bytes, bytes] | None = (sums, signature)
    else:
        image_sha256 = _published_sha256(store, build_dir)
        manifest_bytes = read_small_file(store, f"{build_dir}/{MANIFEST_NAME}")
        signed_sums = None
    where = store.where(f"{build_dir}/{MANIFEST_NAME}")
    manifest = parse_manifest(manifest_bytes.decode("utf-8", errors="replace"), where)
    if (manifest["build_id"], manifest["release"]) != (build_id, release):
        raise ChecksumError(
            f"{where}: describes build {manifest['build_id']} of {manifest['release']}, "
            f"not {build_id} of {release}"
        )
    if manifest["image"]["sha256"].lower() != image_sha256:
        source = SUMS_NAME if trusted_key else SHA256_NAME
        raise ChecksumError(
            f"{store.where(build_dir)}: {source} says {image_sha256}, "
            f"{MANIFEST_NAME} says {manifest['image']['sha256']}"
        )
    return PublishedBuild(release, build_id, image_sha256, manifest, manifest_bytes, signed_sums)


def _published_sha256(store: Store, build_dir: str) -> str:
    relpath = f"{build_dir}/{SHA256_NAME}"
    fields = read_small_file(store, relpath).decode(errors="replace").split()
    if len(fields) < 1 or not SHA256_PATTERN.fullmatch(fields[0].lower()):
        raise StoreError(f"{store.where(relpath)}: does not start with a sha256")
    return fields[0].lower()


def _verified_sums(
    store: Store, build_dir: str, fingerprint: str
) -> tuple[bytes, bytes, dict[str, str]]:
    """SHA256SUMS, its signature and ``{name: sha256}``, once the signature is good."""
    sums = read_small_file(store, f"{build_dir}/{SUMS_NAME}")
    try:
        signature = read_small_file(store, f"{build_dir}/{SIGNATURE_NAME}")
    except NotFoundError:
        raise ChecksumError(
            f"{store.where(build_dir)}: no {SIGNATURE_NAME}, but trusted key "
            f"{fingerprint} is configured"
        ) from None
    where = store.where(f"{build_dir}/{SUMS_NAME}")
    verify_detached_signature(sums, signature, fingerprint, f"{where}.sig")
    return sums, signature, signed_listing(sums, where)


def signed_listing(sums: bytes, where: str) -> dict[str, str]:
    """``{name: sha256}`` of a verified SHA256SUMS, which must list all of SIGNED_NAMES."""
    listed = parse_sums(sums.decode("utf-8", errors="replace"), where)
    unsigned = [name for name in SIGNED_NAMES if name not in listed]
    if unsigned:
        raise ChecksumError(
            f"{where}: signed, but does not list {', '.join(unsigned)} "
            "(published before manifests were signed?); refused with a trusted key"
        )
    return listed


def _listed_file(store: Store, build_dir: str, name: str, listed: dict[str, str]) -> bytes:
    content = read_small_file(store, f"{build_dir}/{name}")
    actual = hashlib.sha256(content).hexdigest()
    if actual != listed[name]:
        raise ChecksumError(
            f"{store.where(build_dir)}/{name}: sha256 is {actual}, the signed "
            f"{SUMS_NAME} says {listed[name]}; refused"
        )
    return content


def read_cached_manifest(path: Path, trusted_key: str | None) -> dict[str, Any]:
    """A manifest from the cache; with ``trusted_key``, only if its signed
    SHA256SUMS (kept beside it) verifies and lists exactly these bytes."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise NotFoundError(f"{path}: cannot read the cached manifest: {error.strerror}") from None
    if trusted_key:
        sums_path, signature_path = signed_sums_paths(path)
        try:
            sums, signature = sums_path.read_bytes(), signature_path.read_bytes()
        except OSError:
            raise ChecksumError(
                f"{path}: no signed {SUMS_NAME} kept for this manifest, but trusted key "
                f"{trusted_key} is configured (import it again with --trusted-key)"
            ) from None
        verify_detached_signature(sums, signature, trusted_key, str(signature_path))
        listed = signed_listing(sums, str(sums_path))
        actual = hashlib.sha256(content).hexdigest()
        if actual != listed[MANIFEST_NAME]:
            raise ChecksumError(
                f"{path}: sha256 is {actual}, the signed {SUMS_NAME} says "
                f"{listed[MANIFEST_NAME]}; refused"
            )
    return parse_manifest(content.decode("utf-8", errors="replace"), str(path))
