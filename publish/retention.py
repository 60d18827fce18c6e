"""``prune RELEASE --keep N``: delete old builds, never a labelled one.

Runs under the release lock, so no label can move to a build while it is
being deleted.  Builds are ordered by build id (it starts with the UTC build
time).  Labels and ``previous-<label>`` protect their builds.  Hidden label
copies (``.<label>.tmp-*``) left by an interrupted promotion are removed
too: they are only ever made under the same lock, so none is in use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from publish.promotion import resolve_label
from publish.stores.base import Store, is_staging_name
from undercloud_appliance.errors import ApplianceError, StoreError
from undercloud_appliance.store_layout import (
    BUILD_ID_PATTERN,
    LABEL_PATTERN,
    build_path,
    check_release,
)

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    protected: dict[str, list[str]] = field(default_factory=dict)  # build id -> labels


def prune(store: Store, release: str, keep: int) -> PruneResult:
    check_release(release)
    if keep < 0:
        raise ApplianceError(f"--keep {keep}: must be 0 or more")
    result = PruneResult()
    with store.lock(release):
        names = store.list_names(release)
        builds = sorted((name for name in names if BUILD_ID_PATTERN.match(name)), reverse=True)
        for label in (name for name in names if LABEL_PATTERN.match(name)):
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
        for name in names:
            stem = name[1:].split(".tmp-", 1)[0]
            if is_staging_name(name) and LABEL_PATTERN.match(stem):
                log.info("removing interrupted label copy %s/%s", release, name)
                store.remove_tree(f"{release}/{name}")
    return result
