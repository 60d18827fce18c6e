"""``list [RELEASE]``: builds, labels, sizes and puddle ids on a store."""

from __future__ import annotations

from typing import Any

from publish.promotion import resolve_label
from undercloud_appliance.errors import ApplianceError, NotFoundError
from undercloud_appliance.manifest import parse_manifest
from undercloud_appliance.store_layout import (
    BUILD_ID_PATTERN,
    LABEL_PATTERN,
    MANIFEST_NAME,
    RELEASE_PATTERN,
    build_path,
    check_release,
)
from undercloud_appliance.stores.base import Store


def list_store(store: Store, release: str | None = None) -> list[dict[str, Any]]:
    """One entry per release: its builds (newest first) and labels."""
    if release is not None:
        return [describe_release(store, check_release(release))]
    releases = [
        name
        for name in store.list_names("")
        if RELEASE_PATTERN.fullmatch(name) and ".." not in name
    ]
    return [describe_release(store, name) for name in releases]


def describe_release(store: Store, release: str) -> dict[str, Any]:
    try:
        names = store.list_names(release)
    except NotFoundError:
        raise NotFoundError(f"{store.display_url}: no release {release!r} in the store") from None
    labels: dict[str, str | None] = {}
    for name in names:
        if LABEL_PATTERN.fullmatch(name):
            try:
                labels[name] = resolve_label(store, release, name)
            except ApplianceError:
                labels[name] = None  # shown as broken, not hidden
    builds = []
    for build_id in sorted((n for n in names if BUILD_ID_PATTERN.fullmatch(n)), reverse=True):
        entry: dict[str, Any] = {
            "build_id": build_id,
            "labels": sorted(label for label, target in labels.items() if target == build_id),
        }
        try:
            manifest = parse_manifest(
                store.read_bytes(f"{build_path(release, build_id)}/{MANIFEST_NAME}").decode(),
                MANIFEST_NAME,
            )
        except ApplianceError as error:
            entry["error"] = str(error)
        else:
            smoke = manifest.get("smoke")
            entry.update(
                created=manifest["created"],
                size=manifest["image"]["file_size"],
                virtual_size=manifest["image"]["virtual_size"],
                sha256=manifest["image"]["sha256"],
                puddle=manifest["puddle"].get("id"),
                smoke=None if not isinstance(smoke, dict) else bool(smoke.get("passed")),
            )
        builds.append(entry)
    return {"release": release, "labels": labels, "builds": builds}


def format_listing(releases: list[dict[str, Any]]) -> str:
    """A plain-text table per release."""
    if not releases:
        return "no releases in this store\n"
    lines: list[str] = []
    for release in releases:
        lines.append(f"{release['release']}:")
        if not release["builds"]:
            lines.append("  (no builds)")
        for build in release["builds"]:
            if "error" in build:
                lines.append(f"  {build['build_id']}  unreadable: {build['error']}")
                continue
            smoke = {None: "-", True: "passed", False: "FAILED"}[build["smoke"]]
            labels = ",".join(build["labels"]) or "-"
            lines.append(
                f"  {build['build_id']}  {_human_size(build['size']):>9}  "
                f"puddle={build['puddle'] or '-'}  smoke={smoke}  labels={labels}"
            )
        for label, target in sorted(release["labels"].items()):
            lines.append(f"  {label} -> {target or 'BROKEN (no readable BUILD_ID)'}")
    return "\n".join(lines) + "\n"


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    raise AssertionError("unreachable")
