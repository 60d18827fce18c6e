"""Lay out a store from a build directory, as docs/store-layout.rst describes.

Importer tests use this instead of ``publish`` code (packages never import
each other).  Images are hard-linked when possible, so a multi-GB build
costs nothing to "publish" a second time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from undercloud_appliance.store_layout import (
    BUILD_ID_NAME,
    IMAGE_NAME,
    MANIFEST_NAME,
    MD5_NAME,
    SHA256_NAME,
    SUMS_NAME,
    build_path,
    label_path,
)

CHUNK = 4 * 1024 * 1024


def _digests(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def lay_out_build(
    store_root: Path, build_dir: Path, labels: tuple[str, ...] = ("latest",)
) -> tuple[str, str]:
    """Publish ``build_dir`` into ``store_root``; return (release, build id)."""
    manifest = json.loads((build_dir / MANIFEST_NAME).read_text())
    release, build_id = manifest["release"], manifest["build_id"]
    image = build_dir / IMAGE_NAME
    published_sha = manifest["image"].get("sha256")
    sha256, md5 = _digests(image)
    if published_sha and published_sha != sha256:
        raise AssertionError(f"{build_dir}: manifest sha256 does not match {IMAGE_NAME}")
    targets = [build_path(release, build_id), *(label_path(release, label) for label in labels)]
    for relative in targets:
        target = store_root / relative
        target.mkdir(parents=True, exist_ok=True)
        _link_or_copy(image, target / IMAGE_NAME)
        (target / SHA256_NAME).write_text(f"{sha256}  {IMAGE_NAME}\n")
        (target / MD5_NAME).write_text(f"{md5}  {IMAGE_NAME}\n")
        (target / MANIFEST_NAME).write_text((build_dir / MANIFEST_NAME).read_text())
        build_id_bytes = f"{build_id}\n".encode()
        manifest_sha = hashlib.sha256((build_dir / MANIFEST_NAME).read_bytes()).hexdigest()
        # What publish writes: SHA256SUMS lists every file a signature covers.
        (target / SUMS_NAME).write_text(
            f"{hashlib.sha256(build_id_bytes).hexdigest()}  {BUILD_ID_NAME}\n"
            f"{manifest_sha}  {MANIFEST_NAME}\n"
            f"{sha256}  {IMAGE_NAME}\n"
        )
        (target / BUILD_ID_NAME).write_bytes(build_id_bytes)
    return release, build_id


def image_relpath(release: str, build_id: str) -> str:
    return f"{build_path(release, build_id)}/{IMAGE_NAME}"
