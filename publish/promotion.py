"""Labels: verify a published build, then point ``<release>/<label>`` at it.

A label moves only after the build is re-verified on the store (all files
present, every checksum recomputed from the stored bytes) and only if its
manifest records a passing smoke test (a build made with ``--no-bake`` has
none) or ``verify --store`` recorded a passing one for its image in the
build's ``VERIFICATION.json``; ``force`` overrides the smoke rule only, is
logged and is recorded in the build's ``PROMOTIONS.json`` (neither goes in
manifest.json, which SHA256SUMS and its signature cover and which never
changes once published).  All of it
runs under the release lock, so two promotions serialise and ``prune``
cannot delete the build meanwhile.  Promoting a build to the label that
already shows it changes nothing and verifies nothing: a no-op.
"""

from __future__ import annotations

import getpass
import json
import logging
from datetime import UTC, datetime
from typing import Any

from undercloud_appliance.checksum_files import parse_sums, sha256_hex
from undercloud_appliance.errors import ApplianceError, ChecksumError, NotFoundError
from undercloud_appliance.manifest import parse_manifest
from undercloud_appliance.store_layout import (
    BUILD_ID_NAME,
    BUILD_ID_PATTERN,
    IMAGE_NAME,
    MANIFEST_NAME,
    MD5_NAME,
    PROMOTIONS_NAME,
    SHA256_NAME,
    SMALL_FILE_LIMITS,
    SUMS_NAME,
    VERIFICATION_NAME,
    build_files,
    build_path,
    check_build_id,
    check_label,
    check_release,
    label_path,
)
from undercloud_appliance.stores.base import Store

log = logging.getLogger(__name__)

PREVIOUS_PREFIX = "previous-"


def check_promotable_label(label: str) -> str:
    check_label(label)
    if label.startswith(PREVIOUS_PREFIX):
        raise ApplianceError(
            f"invalid label {label!r}: '{PREVIOUS_PREFIX}<label>' is kept by promote itself"
        )
    return label


def resolve_label(store: Store, release: str, label: str) -> str:
    """The immutable build id a label shows (read from ``<label>/BUILD_ID``)."""
    path = f"{label_path(release, label)}/{BUILD_ID_NAME}"
    build_id = store.read_bytes(path).decode(errors="replace").strip()
    if not BUILD_ID_PATTERN.fullmatch(build_id):
        raise ChecksumError(f"{store.display_url.rstrip('/')}/{path}: not a build id")
    return build_id


def label_shows(store: Store, release: str, label: str) -> str | None:
    """The build id ``label`` shows, or None when it is unset or unreadable."""
    try:
        return resolve_label(store, release, label)
    except (NotFoundError, ChecksumError):
        return None


def verify_published_build(store: Store, release: str, build_id: str) -> dict[str, Any]:
    """Re-verify a published build from the stored bytes; return its manifest."""
    build = build_path(release, build_id)
    where = f"{store.display_url.rstrip('/')}/{build}"
    try:
        names = set(store.list_names(build))
    except NotFoundError:
        raise NotFoundError(f"{where}: no such build in the store") from None
    missing = [name for name in build_files() if name not in names]
    if missing:
        raise ChecksumError(f"{where}: incomplete build, missing {', '.join(missing)}")

    def text(name: str) -> str:
        return store.read_bytes(f"{build}/{name}").decode(errors="replace")

    manifest_bytes = store.read_bytes(f"{build}/{MANIFEST_NAME}")
    manifest = parse_manifest(manifest_bytes.decode(errors="replace"), f"{where}/{MANIFEST_NAME}")
    build_id_bytes = store.read_bytes(f"{build}/{BUILD_ID_NAME}")
    if build_id_bytes.decode(errors="replace").strip() != build_id:
        raise ChecksumError(f"{where}/{BUILD_ID_NAME}: does not name {build_id}")
    if (manifest["build_id"], manifest["release"]) != (build_id, release):
        raise ChecksumError(f"{where}/{MANIFEST_NAME}: describes another build")
    sums = parse_sums(text(SUMS_NAME), f"{where}/{SUMS_NAME}")
    manifest_sha256 = sums.get(MANIFEST_NAME)
    if manifest_sha256 is not None and manifest_sha256 != sha256_hex(manifest_bytes):
        raise ChecksumError(f"{where}/{SUMS_NAME}: {MANIFEST_NAME} checksum does not match")
    image_sha256 = parse_sums(text(SHA256_NAME), f"{where}/{SHA256_NAME}").get(IMAGE_NAME)
    image_md5 = parse_sums(text(MD5_NAME), f"{where}/{MD5_NAME}", "md5").get(IMAGE_NAME)
    expected = manifest["image"]["sha256"]
    if not sums.get(IMAGE_NAME) == image_sha256 == expected:
        raise ChecksumError(
            f"{where}: {SUMS_NAME}, {SHA256_NAME} and {MANIFEST_NAME} disagree on the image sha256"
        )
    if sums.get(BUILD_ID_NAME) != sha256_hex(build_id_bytes):
        raise ChecksumError(f"{where}/{SUMS_NAME}: {BUILD_ID_NAME} checksum does not match")
    log.info("verifying %s/%s on the store", build, IMAGE_NAME)
    stored = store.file_digests(f"{build}/{IMAGE_NAME}")
    if stored.size != manifest["image"]["file_size"]:
        raise ChecksumError(
            f"{where}/{IMAGE_NAME}: {stored.size} bytes, manifest says "
            f"{manifest['image']['file_size']}"
        )
    if stored.sha256 != expected:
        raise ChecksumError(f"{where}/{IMAGE_NAME}: sha256 is {stored.sha256}, expected {expected}")
    if stored.md5 != image_md5:
        raise ChecksumError(f"{where}/{IMAGE_NAME}: md5 is {stored.md5}, {MD5_NAME} says otherwise")
    return manifest


def promote(
    store: Store, release: str, build_id: str, label: str, force: bool = False
) -> str | None:
    """Point ``label`` at ``build_id``; return the build it showed before.

    When it shows ``build_id`` already, nothing changes (and ``build_id`` is returned).
    """
    check_release(release)
    check_build_id(build_id)
    check_promotable_label(label)
    with store.lock(release):
        if label_shows(store, release, label) == build_id:
            log.info("%s/%s already points at %s: nothing changed", release, label, build_id)
            return build_id
        manifest = verify_published_build(store, release, build_id)
        problem = smoke_problem(manifest.get("smoke"))
        if problem is not None and _verified_on_store(store, release, build_id, manifest):
            problem = None
        if problem is not None:
            if not force:
                raise ApplianceError(
                    f"build {build_id}: {problem}; not promoting to {label!r} (--force overrides)"
                )
            log.warning("promoting %s to %r although %s (--force)", build_id, label, problem)
            _record_forced_promotion(store, release, build_id, label, problem)
        previous = store.point_label(release, label, build_id)
    log.info("%s/%s -> %s (was %s)", release, label, build_id, previous or "unset")
    return previous


def smoke_problem(smoke: Any) -> str | None:
    """Why a manifest's smoke record does not allow promotion, or None when it passed."""
    if smoke is None:
        return "no smoke test is recorded (built with --no-bake? verify records one)"
    if not isinstance(smoke, dict) or smoke.get("passed") is not True:
        return "its smoke test did not pass"
    return None


def record_verification(store: Store, release: str, build_id: str, smoke: dict[str, Any]) -> None:
    """Write ``verify --store``'s verdict on a published build beside it.

    The build is checked first (every file, every checksum), and the record
    names the image's sha256: it vouches for these bytes only.
    """
    check_release(release)
    check_build_id(build_id)
    with store.lock(release):
        manifest = verify_published_build(store, release, build_id)
        record = {
            "smoke": smoke,
            "image_sha256": manifest["image"]["sha256"],
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": getpass.getuser(),
        }
        # Its own file, as PROMOTIONS.json: manifest.json is signed and never rewritten.
        path = f"{build_path(release, build_id)}/{VERIFICATION_NAME}"
        store.write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())


def _verified_on_store(store: Store, release: str, build_id: str, manifest: dict) -> bool:
    """Whether the build's VERIFICATION.json records a pass for this very image."""
    path = f"{build_path(release, build_id)}/{VERIFICATION_NAME}"
    try:
        record = json.loads(store.read_bytes(path, SMALL_FILE_LIMITS[VERIFICATION_NAME]))
    except NotFoundError:
        return False
    except ValueError:
        raise ChecksumError(f"{store.where(path)}: not a JSON object") from None
    if not isinstance(record, dict):
        raise ChecksumError(f"{store.where(path)}: not a JSON object")
    if record.get("image_sha256") != manifest["image"]["sha256"]:
        log.warning("%s names another image: ignored", store.where(path))
        return False
    if smoke_problem(record.get("smoke")) is not None:
        return False
    log.info("build %s: verified on the store at %s", build_id, record.get("at"))
    return True


def _record_forced_promotion(
    store: Store, release: str, build_id: str, label: str, reason: str
) -> None:
    path = f"{build_path(release, build_id)}/{PROMOTIONS_NAME}"
    try:
        promotions = json.loads(store.read_bytes(path, SMALL_FILE_LIMITS[PROMOTIONS_NAME]))
    except NotFoundError:
        promotions = []
    except ValueError:
        raise ChecksumError(f"{store.where(path)}: not a JSON list") from None
    if not isinstance(promotions, list):
        raise ChecksumError(f"{store.where(path)}: not a JSON list")
    promotions.append(
        {
            "label": label,
            "forced": True,
            "reason": reason,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": getpass.getuser(),
        }
    )
    # Its own file: manifest.json is signed and never rewritten.
    store.write_bytes(path, (json.dumps(promotions, indent=2) + "\n").encode())
