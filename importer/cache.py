"""The content-addressed image cache.

::

    <cache>/<sha256>.qcow2              verified image, read-only, never written again
    <cache>/manifests/<msha>.json       a build's manifest, named by its own sha256
    <cache>/manifests/<msha>.SHA256SUMS(.sig)
                                        the signed list that vouched for that
                                        manifest, when a trusted key was asked for
                                        (checked again whenever it is used)
    <cache>/<sha256>.partial            a download in progress (never under the final name)
    <cache>/<sha256>.partial.json       resume state: store path, version validator, size
    <cache>/<sha256>.lock               flock: one download of an image at a time
    <cache>/builds/<release>/<build-id> the sha256 of that build's image, then of
                                        its manifest
    <cache>/layers/<sha256>-<key>.qcow2 a customised layer over the image (ssh key,
                                        hostname, disk size: <key> digests them);
                                        read-only, reused by every import that asks
                                        for the same customisation

``$UNDERCLOUD_APPLIANCE_CACHE`` overrides the default
``~/.cache/undercloud-appliance/images``.  Overlays made by ``import`` use
cached images as backing files, so ``destroy`` never removes from here.

Manifests are keyed by their own content, not by the image they describe:
the same image fetched from an unsigned store and then a signed one gets two
manifest files, and a signed fetch never hands out the unsigned one.
(``<sha256>.manifest.json`` files are what earlier versions kept.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.manifest import write_file_atomically
from undercloud_appliance.store_layout import SIGNATURE_NAME, SUMS_NAME

CACHE_ENV = "UNDERCLOUD_APPLIANCE_CACHE"
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (base / "undercloud-appliance" / "images").resolve()


def check_sha256(value: str) -> str:
    if not SHA256_PATTERN.fullmatch(value):
        raise ApplianceError(f"invalid sha256 {value!r}: expected 64 lower-case hex digits")
    return value


@dataclass(frozen=True)
class ImageCache:
    root: Path

    @classmethod
    def default(cls) -> ImageCache:
        return cls(default_cache_dir())

    def ensure(self) -> ImageCache:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ApplianceError(f"cache {self.root}: cannot create: {error.strerror}") from None
        return self

    def image_path(self, sha256: str) -> Path:
        return self.root / f"{check_sha256(sha256)}.qcow2"

    def legacy_manifest_path(self, sha256: str) -> Path:
        """Where earlier versions kept an image's manifest (unsigned, keyed by the image)."""
        return self.root / f"{check_sha256(sha256)}.manifest.json"

    def manifest_path(self, manifest_sha256: str) -> Path:
        """The manifest whose own sha256 is ``manifest_sha256``."""
        return self.root / "manifests" / f"{check_sha256(manifest_sha256)}.json"

    def keep_manifest(
        self, manifest_bytes: bytes, signed_sums: tuple[bytes, bytes] | None = None
    ) -> Path:
        """Store verified manifest bytes under their sha256 (and the signed
        SHA256SUMS and signature that listed them); return the manifest's path."""
        path = self.manifest_path(hashlib.sha256(manifest_bytes).hexdigest())
        path.parent.mkdir(parents=True, exist_ok=True)
        write_manifest_with_signature(path, manifest_bytes, signed_sums)
        return path

    def partial_path(self, sha256: str) -> Path:
        return self.root / f"{check_sha256(sha256)}.partial"

    def partial_state_path(self, sha256: str) -> Path:
        return self.root / f"{check_sha256(sha256)}.partial.json"

    def layer_path(self, sha256: str, customisation_key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{16,64}", customisation_key):
            raise ApplianceError(f"invalid layer key {customisation_key!r}")
        return self.root / "layers" / f"{check_sha256(sha256)}-{customisation_key}.qcow2"

    def has_image(self, sha256: str, expected_size: int | None = None) -> bool:
        """Whether a verified image is cached (and has the expected size)."""
        try:
            size = self.image_path(sha256).stat().st_size
        except FileNotFoundError:
            return False
        return expected_size is None or size == expected_size

    @contextlib.contextmanager
    def locked(self, sha256: str) -> Iterator[None]:
        """Hold the image's lock: concurrent fetches of one image wait for each other."""
        self.ensure()
        lock_path = self.root / f"{check_sha256(sha256)}.lock"
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_partial_state(self, sha256: str) -> dict[str, Any] | None:
        try:
            state = json.loads(self.partial_state_path(sha256).read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def write_partial_state(self, sha256: str, state: dict[str, Any]) -> None:
        # Owner only, like every file here that may name a store or puddle URL.
        write_file_atomically(
            self.partial_state_path(sha256), json.dumps(state).encode(), mode=0o600
        )

    def discard_partial(self, sha256: str) -> None:
        self.partial_path(sha256).unlink(missing_ok=True)
        self.partial_state_path(sha256).unlink(missing_ok=True)

    def commit_partial(self, sha256: str) -> Path:
        """Move a verified partial download to its final, read-only name."""
        final = self.image_path(sha256)
        partial = self.partial_path(sha256)
        os.chmod(partial, 0o444)
        os.replace(partial, final)
        self.partial_state_path(sha256).unlink(missing_ok=True)
        return final

    def remember_build(self, release: str, build_id: str, sha256: str, manifest_path: Path) -> None:
        index = self.root / "builds" / release
        index.mkdir(parents=True, exist_ok=True)
        manifest_sha256 = manifest_path.name.removesuffix(".json")
        write_file_atomically(index / build_id, f"{sha256}\n{manifest_sha256}\n".encode())

    def known_build(self, release: str, build_id: str) -> tuple[str, Path] | None:
        """The image sha256 and manifest path of a build fetched before, if its
        image is still cached."""
        try:
            lines = (self.root / "builds" / release / build_id).read_text().split()
        except OSError:
            return None
        if not lines or not all(SHA256_PATTERN.fullmatch(line) for line in lines):
            return None
        sha256 = lines[0]
        if not self.has_image(sha256):
            return None
        if len(lines) == 1:
            return sha256, self.legacy_manifest_path(sha256)
        return sha256, self.manifest_path(lines[1])


def write_manifest_with_signature(
    path: Path, manifest_bytes: bytes, signed_sums: tuple[bytes, bytes] | None
) -> None:
    """Write manifest bytes as published, and the signed SHA256SUMS and
    signature that listed them beside it (see :func:`signed_sums_paths`)."""
    if signed_sums is not None:
        for target, content in zip(signed_sums_paths(path), signed_sums, strict=True):
            write_file_atomically(target, content)
    # As published; one published before manifests were redacted may still
    # hold a puddle URL's password: owner only.
    write_file_atomically(path, manifest_bytes, mode=0o600)


def signed_sums_paths(manifest_path: Path) -> tuple[Path, Path]:
    """Where the signed SHA256SUMS and its signature that vouched for a cached manifest are."""
    digest = manifest_path.name.removesuffix(".json")
    directory = manifest_path.parent
    return directory / f"{digest}.{SUMS_NAME}", directory / f"{digest}.{SIGNATURE_NAME}"
