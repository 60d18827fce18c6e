"""``rollback NAME``: revert a running appliance to one of its update snapshots.

Online updates and upgrades snapshot the domain first
(:func:`importer.libvirt_domain.take_snapshot`); ``rollback`` reverts to the
newest (or a named) one by hand, and a failed online update reverts to its
own snapshot with :func:`revert_running_appliance`.  The import record and
the domain metadata then say the release and puddle the snapshot holds.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from importer import libvirt_domain
from importer.appliance_state import read_record, record_change, state_dir_for
from importer.handoff import SSH_CONFIG_NAME, ssh_command, wait_for_ssh
from undercloud_appliance.errors import NotFoundError
from undercloud_appliance.steps import StepRunner

SSH_TIMEOUT_AFTER_REVERT = 300.0


def revert_running_appliance(domain: Any, snapshot_name: str, ssh_config: Path) -> None:
    """Revert the domain (running again afterwards), sync its clock, wait for ssh."""
    libvirt_domain.revert_to_snapshot(domain, snapshot_name)
    wait_for_ssh(
        ssh_config,
        domain.name(),
        SSH_TIMEOUT_AFTER_REVERT,
        still_running=lambda: bool(domain.isActive()),
    )
    # The restored guest clock is as old as the snapshot: apt and TLS care.
    subprocess.run(
        ssh_command(
            ssh_config, domain.name(), f"sudo -n date -u -s @{int(time.time())} >/dev/null"
        ),
        capture_output=True,
        timeout=60,
        check=False,
    )


@dataclass
class RollbackContext:
    """State shared by the steps of one rollback."""

    name: str
    uri: str
    requested_snapshot: str | None = None
    state_dir: Path = Path()
    record: dict[str, Any] = field(default_factory=dict)
    domain: Any = None
    snapshot: libvirt_domain.Snapshot | None = None


def step_find_appliance(context: RollbackContext) -> None:
    context.state_dir = state_dir_for(context.name)
    context.domain = libvirt_domain.lookup(libvirt_domain.connect(context.uri), context.name)
    context.record = read_record(context.state_dir)
    if context.domain is None or not context.record:
        raise NotFoundError(f"no imported appliance named {context.name!r}")


def step_choose_snapshot(context: RollbackContext) -> None:
    snapshots = libvirt_domain.list_snapshots(context.domain)
    if not snapshots:
        raise NotFoundError(f"appliance {context.name!r} has no snapshots to roll back to")
    if context.requested_snapshot is None:
        context.snapshot = snapshots[-1]
        return
    matches = [s for s in snapshots if s.name == context.requested_snapshot]
    if not matches:
        known = ", ".join(s.name for s in snapshots)
        raise NotFoundError(
            f"appliance {context.name!r} has no snapshot {context.requested_snapshot!r} ({known})"
        )
    context.snapshot = matches[0]


def step_revert_to_snapshot(context: RollbackContext) -> None:
    assert context.snapshot is not None
    revert_running_appliance(
        context.domain, context.snapshot.name, context.state_dir / SSH_CONFIG_NAME
    )


def step_record_rollback(context: RollbackContext) -> None:
    snapshot, record = context.snapshot, context.record
    assert snapshot is not None
    record_change(
        context.state_dir,
        record,
        context.domain,
        # As the revert left it.
        libvirt_domain.read_metadata(context.domain) or {},
        release=str(snapshot.release or record.get("release")),
        puddle=snapshot.puddle,
        history_entry={
            "kind": "rollback",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "snapshot": snapshot.name,
            "puddle": snapshot.puddle,
            "from_puddle": record.get("puddle"),
        },
    )


ROLLBACK_STEPS = (
    step_find_appliance,
    step_choose_snapshot,
    step_revert_to_snapshot,
    step_record_rollback,
)


def rollback(name: str, uri: str, snapshot_name: str | None = None) -> libvirt_domain.Snapshot:
    """Revert ``name`` to its newest (or the named) snapshot; return that snapshot."""
    context = RollbackContext(name=name, uri=uri, requested_snapshot=snapshot_name)
    StepRunner(ROLLBACK_STEPS).run(context)
    assert context.snapshot is not None
    return context.snapshot
