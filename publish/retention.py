"""``prune RELEASE --keep N``: delete old builds, never a labelled one.

Runs under the release lock, so no label can move to a build while it is
being deleted.  Builds are ordered by build id (it starts with the UTC build
time).  Labels and ``previous-<label>`` protect their builds.  Hidden label
copies (``.<label>.tmp-*``) left by an interrupted promotion are removed
too: they are only ever made under the same lock, so none is in use.
Staging directories of builds (``.staging/<build-id>.tmp-*``) are made
without the lock by publishes that may still run, so only those untouched
for ``STALE_STAGING_SECONDS`` are removed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from publish.promotion import resolve_label
from undercloud_appliance.errors import ApplianceError, NotFoundError, StoreError
from undercloud_appliance.store_layout import (
    BUILD_ID_PATTERN,
    LABEL_PATTERN,
    build_path,
    check_release,
)
from undercloud_appliance.stores.base import STAGING_DIRECTORY, Store, staged_final_name

log = logging.getLogger(__name__)

STALE_STAGING_SECONDS = 24 * 3600


@dataclass
class PruneResult:
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    protected: dict[str, list[str]] = field(default_factory=dict)  # build id -> labels
    leftovers: list[str] = field(default_factory=list)  # hidden staging names removed


def prune(store: Store, release: str, keep: int) -> PruneResult:
    check_release(release)
    if keep < 0:
        raise ApplianceError(f"--keep {keep}: must be 0 or more")
    result = PruneResult()
    with store.lock(release):
        names = store.list_names(release)
        builds = sorted((name for name in names if BUILD_ID_PATTERN.fullmatch(name)), reverse=True)
        for label in (name for name in names if LABEL_PATTERN.fullmatch(name)):
            try:
                target = resolve_label(store, release, label)
            except ApplianceError as error:
                # Deleting blindly could remove what a broken label shows.
                raise StoreError(f"not pruning {release}: label {label!r}: {error}") from None
            result.protected.setdefault(target, []).append(label)
        for position, build_id in enumerate(builds):
            if position < keep or build_id in result.protected:
                result.kept.append(build_id)
                continue
            log.info("deleting %s/%s", release, build_id)
            store.remove_tree(build_path(release, build_id))
            result.deleted.append(build_id)
        # Temporary label symlinks (file://, ssh://) sit in the release itself.
        for name in names:
            final = staged_final_name(name)
            if name.startswith(".") and final is not None and LABEL_PATTERN.fullmatch(final):
                store.remove_tree(f"{release}/{name}")
                result.leftovers.append(name)
        staging = f"{release}/{STAGING_DIRECTORY}"
        try:
            staged = store.list_names(staging)
        except NotFoundError:
            staged = []
        for name in staged:
            if _is_stale(store, f"{staging}/{name}"):
                log.info("removing leftover of an interrupted run: %s/%s", staging, name)
                store.remove_tree(f"{staging}/{name}")
                result.leftovers.append(name)
    return result


def _is_stale(store: Store, path: str) -> bool:
    final = staged_final_name(path.rsplit("/", 1)[-1]) or ""
    if LABEL_PATTERN.fullmatch(final):
        return True  # label copies are made under the lock we hold
    modified = store.modified_at(path)
    return modified is not None and time.time() - modified > STALE_STAGING_SECONDS
