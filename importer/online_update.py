"""Online update, major upgrade and rollback of an imported, running appliance.

``update NAME --puddle ID|LABEL`` and ``upgrade NAME --to-release R`` are
one list of timed steps over ssh (the ``ssh.config`` the import wrote):

1. check the appliance: its libvirt domain runs and ssh answers;
2. resolve and pin the puddle with the settings the build's manifest
   carries (for an upgrade: the target release's published manifest);
3. read the installed package versions;
4. take a libvirt snapshot of the running domain (internal, with memory,
   kept in the appliance's qcow2 overlay);
5. replace the previous puddle's repo files with the new puddle's;
6. refresh, upgrade (apt or dnf: :mod:`importer.package_managers`);
7. run the profile's update (or upgrade) commands, then its smoke commands;
8. read the versions again, append to the puddle history inside the
   appliance and record the change in the import record and domain metadata.

Any failure after the snapshot reverts the domain to it (still running,
guest clock set to the host's), appends a ``failed`` entry to the history
and reports the failure *and* the revert in one line.  ``rollback NAME``
reverts to the newest (or a named) snapshot by hand; ``status`` lists them.

Argument lists built here are quoted with :func:`shlex.join` before ssh
hands them to the remote shell; only the profile's own commands (reviewed
like code) are run as shell text on purpose.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from importer import libvirt_domain, puddle_history
from importer.fetch import resolve_build_id
from importer.handoff import SSH_CONFIG_NAME, ssh_command, wait_for_ssh
from importer.imports import RECORD_NAME, read_record, state_dir_for, write_record
from importer.offline_update import (
    GUEST_LOG_DIR,
    OUTPUT_TAIL_LINES,
    USER_MODE_HOST_ADDRESS,
    PuddleTarget,
    UpdateError,
    failure_summary,
    guest_visible_url,
    resolve_puddle_target,
)
from importer.package_managers import find_puddle_repo_files_command, plan_update
from importer.smoke import first_failure, run_smoke_commands
from importer.store_reader import StoreReader
from importer.version_diff import VersionDiff, diff_versions
from undercloud_appliance.errors import ApplianceError, NotFoundError
from undercloud_appliance.manifest import (
    MANIFEST_NAME,
    parse_manifest,
    read_manifest,
    write_file_atomically,
)
from undercloud_appliance.puddles import check_repo_exists
from undercloud_appliance.steps import StepRunner

log = logging.getLogger(__name__)

SNAPSHOT_PREFIX = "pre-"
# Internal snapshots hold the guest's memory too: keep a few, not all.
SNAPSHOTS_KEPT = 3
COMMAND_TIMEOUT_SECONDS = 3600
SSH_TIMEOUT_AFTER_REVERT = 300.0


@dataclass
class OnlineChange:
    """State shared by the steps of one online update or upgrade."""

    name: str
    uri: str
    requested_puddle: str
    kind: str = "update"  # or "upgrade"
    puddle_base: str | None = None
    target_release: str | None = None
    target_store: str | None = None
    target_label: str | None = None
    state_dir: Path = Path()
    record: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    target_manifest: dict[str, Any] = field(default_factory=dict)
    domain: Any = None
    metadata: dict[str, str] = field(default_factory=dict)
    ssh_config: Path = Path()
    target: PuddleTarget | None = None
    previous_puddle_id: str | None = None
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    diff: VersionDiff = field(default_factory=VersionDiff)
    snapshot: str | None = None
    smoke: list[dict[str, Any]] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        log.debug("%s", text.rstrip())
        self.log_lines.append(text.rstrip("\n"))

    @property
    def what(self) -> str:
        if self.kind == "upgrade":
            return f"upgrade to {self.target_release}"
        return f"puddle {self.target.puddle_id if self.target else self.requested_puddle}"


@dataclass
class OnlineResult:
    name: str
    kind: str
    release: str
    puddle_id: str
    previous_puddle_id: str | None
    snapshot: str
    diff: VersionDiff
    smoke: list[dict[str, Any]]
    timings: dict[str, float]


# -- running things in the appliance ------------------------------------------


def run_over_ssh(
    change: OnlineChange,
    argv: Sequence[str],
    what: str,
    *,
    sudo: bool = True,
    input_text: str | None = None,
    shell_text: str | None = None,
    ok_codes: tuple[int, ...] = (0,),
    timeout: float = COMMAND_TIMEOUT_SECONDS,
) -> str:
    """Run ``argv`` (or the profile's ``shell_text``) in the appliance; return its output.

    A failure raises UpdateError naming the change, the step, the packages
    the output blames and its most telling line.
    """
    remote = shell_text if shell_text is not None else shlex.join(argv)
    if sudo:
        remote = f"sudo -n -- /bin/sh -c {shlex.quote(remote)}"
    change.note(f"+ {shell_text if shell_text is not None else shlex.join(argv)}")
    try:
        completed = subprocess.run(
            ssh_command(change.ssh_config, change.name, remote),
            input=input_text if input_text is not None else "",
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UpdateError(f"{change.what}: {what} timed out after {timeout:.0f} s") from None
    output = completed.stdout + completed.stderr
    change.note(output)
    if completed.returncode in ok_codes:
        return completed.stdout
    change.note(f"exit status {completed.returncode}")
    tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
    log.warning("%s failed (exit status %d), last output:\n%s", what, completed.returncode, tail)
    if completed.returncode == 255:
        raise UpdateError(f"{change.what}: {what}: ssh failed: {failure_summary(output)}")
    manager = change.target.package_manager if change.target else None
    blamed = manager.failed_packages(output) if manager else []
    package = f" in package {', '.join(blamed)}" if blamed else ""
    raise UpdateError(
        f"{change.what}: {what} failed{package} "
        f"(exit status {completed.returncode}): {failure_summary(output)}"
    )


def write_guest_file(change: OnlineChange, path: str, content: str, mode: str = "0644") -> None:
    run_over_ssh(
        change,
        ["install", "-D", "-m", mode, "/dev/stdin", path],
        f"writing {path}",
        input_text=content,
    )


def installed_versions(change: OnlineChange, manager: Any) -> dict[str, str]:
    output = run_over_ssh(
        change, manager.list_installed_command(), "listing installed packages", sudo=False
    )
    return manager.parse_installed(output)


# -- steps --------------------------------------------------------------------


def step_check_appliance(change: OnlineChange) -> None:
    change.state_dir = state_dir_for(change.name)
    connection = libvirt_domain.connect(change.uri)
    change.domain = libvirt_domain.lookup(connection, change.name)
    change.record = read_record(change.state_dir)
    if change.domain is None or not change.record:
        raise NotFoundError(f"no imported appliance named {change.name!r}")
    change.metadata = libvirt_domain.read_metadata(change.domain) or {}
    state = libvirt_domain.state_name(change.domain)
    if state != "running":
        raise UpdateError(
            f"appliance {change.name!r} is not running ({state}): start it with "
            f"'virsh start {change.name}', or update a build directory with --offline"
        )
    change.ssh_config = change.state_dir / SSH_CONFIG_NAME
    manifest_path = change.record.get("manifest")
    if not manifest_path or not Path(manifest_path).is_file():
        raise NotFoundError(
            f"{change.state_dir / RECORD_NAME}: the build's manifest is not in the cache "
            f"({manifest_path or 'not recorded'}); import the appliance again"
        )
    change.manifest = read_manifest(Path(manifest_path))
    change.previous_puddle_id = change.record.get("puddle")
    run_over_ssh(change, ["true"], "checking ssh", sudo=False, timeout=60)


def step_read_target_release(change: OnlineChange) -> None:
    """For an upgrade: the target release's manifest, read from the store."""
    if change.kind != "upgrade":
        change.target_manifest = change.manifest
        return
    assert change.target_release is not None
    store_url = change.target_store or change.record.get("store_url")
    if not store_url:
        raise UpdateError(f"upgrade to {change.target_release}: no --store given or recorded")
    store = StoreReader.open(store_url)
    build_id = resolve_build_id(store, change.target_release, change.target_label or "latest")
    path = f"{change.target_release}/{build_id}/{MANIFEST_NAME}"
    change.target_manifest = parse_manifest(store.read_text(path), f"{store_url}/{path}")
    change.note(f"upgrade {change.name} to {change.target_release} build {build_id}")


def step_resolve_puddle(change: OnlineChange) -> None:
    source = "the target release's manifest" if change.kind == "upgrade" else MANIFEST_NAME
    change.target = resolve_puddle_target(
        change.target_manifest, change.requested_puddle, change.puddle_base, source
    )
    network = change.metadata.get("network") or change.record.get("network")
    for repo in change.target.repos:
        check_repo_exists(repo["url"], change.target.puddle_id)
        visible = guest_url(repo["url"], network)
        if visible is None:
            raise UpdateError(
                f"{change.what}: {repo['url']} is on this host's loopback, which a guest on "
                f"libvirt network {network!r} cannot reach; serve the puddles on an address "
                "the guest can reach"
            )
    change.note(f"{change.kind} {change.name} to puddle {change.target.puddle_id}")


def guest_url(url: str, network: str | None) -> str | None:
    """``url`` as the running guest reaches it, or None when it cannot."""
    translated = guest_visible_url(url, USER_MODE_HOST_ADDRESS)
    if translated == url:
        return url
    return translated if network == "user" else None


def step_read_versions_before(change: OnlineChange) -> None:
    assert change.target is not None
    change.before = installed_versions(change, change.target.package_manager)


def step_take_snapshot(change: OnlineChange) -> None:
    assert change.target is not None
    reason = (
        f"before upgrade to {change.target_release}"
        if change.kind == "upgrade"
        else f"before update to puddle {change.target.puddle_id}"
    )
    change.snapshot = take_snapshot(change.domain, change.record, reason)
    change.note(f"snapshot {change.snapshot}: {reason}")


def step_switch_repositories(change: OnlineChange) -> None:
    target = change.target
    assert target is not None
    manager = target.package_manager
    previous_urls = [
        str(repo.get("url", "")) for repo in change.manifest["puddle"].get("repos") or []
    ]
    previous_urls += [guest_url(url, change.record.get("network")) or url for url in previous_urls]
    listed = run_over_ssh(
        change,
        find_puddle_repo_files_command(manager, previous_urls),
        "finding previous puddle repo files",
        ok_codes=(0, 1),
    )
    old_files = [line for line in listed.splitlines() if line.strip()]
    if old_files:
        run_over_ssh(change, ["rm", "-f", "--", *old_files], "removing previous repo files")
    network = change.record.get("network")
    guest_repos = [{**repo, "url": guest_url(repo["url"], network)} for repo in target.repos]
    plan = plan_update(manager, guest_repos, target.puddle_id)
    for path, content in plan.repo_files.items():
        write_guest_file(change, path, content)
    for what, argv in plan.commands:
        run_over_ssh(change, argv, what)


def step_run_profile_commands(change: OnlineChange) -> None:
    undercloud = (change.target_manifest["profile"].get("resolved") or {}).get("undercloud") or {}
    key = "upgrade_commands" if change.kind == "upgrade" else "update_commands"
    for command in undercloud.get(key) or []:
        run_over_ssh(
            change,
            [],
            f"{key[:-1].replace('_', ' ')} {command!r}",
            sudo=False,
            shell_text=str(command),
        )


def step_run_smoke_commands(change: OnlineChange) -> None:
    change.smoke = run_smoke_commands(change.ssh_config, change.name, change.target_manifest)
    failure = first_failure(change.smoke)
    if failure:
        raise UpdateError(f"{change.what}: {failure}")


def step_record_change(change: OnlineChange) -> None:
    target = change.target
    assert target is not None and change.snapshot is not None
    change.after = installed_versions(change, target.package_manager)
    change.diff = diff_versions(change.before, change.after)
    change.note(f"package versions, before -> after:\n{change.diff.as_text()}")
    append_history(change, "ok")
    write_guest_file(
        change,
        f"{GUEST_LOG_DIR}/{change.kind}-{target.puddle_id}.log",
        "\n".join(change.log_lines) + "\n",
    )
    release = change.target_release if change.kind == "upgrade" else change.record.get("release")
    entry = {
        "kind": change.kind,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "puddle": target.puddle_id,
        "from_puddle": change.previous_puddle_id,
        "release": release,
        "from_release": change.record.get("release"),
        "snapshot": change.snapshot,
        "diff": change.diff.as_dict(),
    }
    if change.kind == "upgrade":
        entry["manifest"] = save_target_manifest(change)
        change.record["manifest"] = entry["manifest"]
    record_state(change, release=str(release), puddle=target.puddle_id, history_entry=entry)


def save_target_manifest(change: OnlineChange) -> str:
    """Keep the target release's manifest beside the appliance: later updates use it."""
    path = change.state_dir / f"{change.target_release}.{MANIFEST_NAME}"
    write_file_atomically(path, (json.dumps(change.target_manifest, indent=2) + "\n").encode())
    return str(path)


# -- shared pieces ------------------------------------------------------------


def append_history(change: OnlineChange, result: str, error: str | None = None) -> None:
    assert change.target is not None
    text = run_over_ssh(
        change,
        ["cat", puddle_history.HISTORY_PATH],
        "reading the puddle history",
        sudo=False,
        ok_codes=(0, 1),
    )
    entries = puddle_history.parse_history(text) if text.strip() else []
    details: dict[str, Any] = {"requested": change.requested_puddle, "kind": change.kind}
    if change.kind == "upgrade":
        details.update(release=change.target_release, from_release=change.record.get("release"))
    if change.snapshot:
        details["snapshot"] = change.snapshot
    if error:
        details["error"] = error
    entries.append(
        puddle_history.make_entry(
            change.target.puddle_id, change.previous_puddle_id, result, "online", **details
        )
    )
    write_guest_file(change, puddle_history.HISTORY_PATH, puddle_history.dump_history(entries))


def record_state(
    change: OnlineChange, release: str, puddle: str | None, history_entry: dict[str, Any]
) -> None:
    record = change.record
    record["release"] = release
    record["puddle"] = puddle
    record.setdefault("changes", []).append(history_entry)
    write_record(change.state_dir, record)
    metadata = dict(change.metadata)
    metadata.update({"release": release, "puddle": puddle or ""})
    libvirt_domain.write_metadata(change.domain, metadata)
    change.metadata = metadata


def take_snapshot(domain: Any, record: Mapping[str, Any], reason: str) -> str:
    """Snapshot the running domain before a change; returns the snapshot's name.

    The description carries the release and puddle it holds, so a revert
    (automatic or ``rollback``) can restore the record too.
    """
    name = f"{SNAPSHOT_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    description = json.dumps(
        {"reason": reason, "release": record.get("release"), "puddle": record.get("puddle")}
    )
    libvirt_domain.create_snapshot(domain, name, description)
    for old in list_snapshots(domain)[:-SNAPSHOTS_KEPT]:
        libvirt_domain.delete_snapshot(domain, old["name"])
        log.info("deleted old snapshot %s", old["name"])
    return name


def list_snapshots(domain: Any) -> list[dict[str, Any]]:
    """This tool's snapshots of ``domain``, oldest first."""
    snapshots = []
    for snapshot in libvirt_domain.list_snapshots(domain):
        if not snapshot.name.startswith(SNAPSHOT_PREFIX):
            continue
        try:
            description = json.loads(snapshot.description or "{}")
        except ValueError:
            description = {}
        if not isinstance(description, dict):
            description = {}
        snapshots.append(
            {
                "name": snapshot.name,
                "created": snapshot.created,
                "reason": description.get("reason"),
                "release": description.get("release"),
                "puddle": description.get("puddle"),
            }
        )
    return snapshots


def revert_to_snapshot(domain: Any, name: str, ssh_config: Path) -> None:
    """Revert the domain (running again afterwards), sync its clock, wait for ssh."""
    libvirt_domain.revert_to_snapshot(domain, name)
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


# -- entry points -------------------------------------------------------------

CHANGE_STEPS = (
    step_check_appliance,
    step_read_target_release,
    step_resolve_puddle,
    step_read_versions_before,
    step_take_snapshot,
)
GUARDED_STEPS = (
    step_switch_repositories,
    step_run_profile_commands,
    step_run_smoke_commands,
    step_record_change,
)


def apply_online_change(change: OnlineChange) -> OnlineResult:
    """Run the steps; on failure after the snapshot, revert to it and say so."""
    runner: StepRunner[OnlineChange] = StepRunner(CHANGE_STEPS)
    runner.run(change)
    try:
        StepRunner(GUARDED_STEPS, runner.timings).run(change)
    except (ApplianceError, subprocess.SubprocessError, OSError) as error:
        assert change.snapshot is not None
        message = str(error)
        log.warning(
            "%s failed; reverting %s to snapshot %s", change.what, change.name, change.snapshot
        )
        started = time.monotonic()
        revert_to_snapshot(change.domain, change.snapshot, change.ssh_config)
        runner.timings.seconds["revert-to-snapshot"] = time.monotonic() - started
        try:
            append_history(change, "failed", error=message)
        except ApplianceError as history_error:
            log.warning("could not record the failure in the history: %s", history_error)
        raise UpdateError(
            f"{message}; reverted {change.name} to snapshot {change.snapshot} "
            f"({change.previous_puddle_id or 'no puddle'} again)"
        ) from None
    assert change.target is not None and change.snapshot is not None
    return OnlineResult(
        name=change.name,
        kind=change.kind,
        release=str(change.record.get("release")),
        puddle_id=change.target.puddle_id,
        previous_puddle_id=change.previous_puddle_id,
        snapshot=change.snapshot,
        diff=change.diff,
        smoke=change.smoke,
        timings=runner.timings.as_dict(),
    )


def update_online(
    name: str, requested_puddle: str, uri: str, puddle_base: str | None = None
) -> OnlineResult:
    """``update NAME --puddle ID|LABEL``: see the module docstring."""
    return apply_online_change(
        OnlineChange(name=name, uri=uri, requested_puddle=requested_puddle, puddle_base=puddle_base)
    )


def upgrade_online(
    name: str,
    to_release: str,
    uri: str,
    requested_puddle: str = "latest",
    store_url: str | None = None,
    label: str | None = None,
    puddle_base: str | None = None,
) -> OnlineResult:
    """``upgrade NAME --to-release R``: the target release's repos, upgrade and smoke commands."""
    return apply_online_change(
        OnlineChange(
            name=name,
            uri=uri,
            requested_puddle=requested_puddle,
            kind="upgrade",
            puddle_base=puddle_base,
            target_release=to_release,
            target_store=store_url,
            target_label=label,
        )
    )


def rollback(name: str, uri: str, snapshot_name: str | None = None) -> dict[str, Any]:
    """Revert ``name`` to its newest (or the named) snapshot; return that snapshot."""
    state_dir = state_dir_for(name)
    domain = libvirt_domain.lookup(libvirt_domain.connect(uri), name)
    record = read_record(state_dir)
    if domain is None or not record:
        raise NotFoundError(f"no imported appliance named {name!r}")
    snapshots = list_snapshots(domain)
    if not snapshots:
        raise NotFoundError(f"appliance {name!r} has no snapshots to roll back to")
    chosen = snapshots[-1]
    if snapshot_name is not None:
        matches = [s for s in snapshots if s["name"] == snapshot_name]
        if not matches:
            known = ", ".join(s["name"] for s in snapshots)
            raise NotFoundError(f"appliance {name!r} has no snapshot {snapshot_name!r} ({known})")
        chosen = matches[0]
    revert_to_snapshot(domain, chosen["name"], state_dir / SSH_CONFIG_NAME)
    change = OnlineChange(
        name=name,
        uri=uri,
        requested_puddle="",
        state_dir=state_dir,
        record=record,
        domain=domain,
        metadata=libvirt_domain.read_metadata(domain) or {},
    )
    record_state(
        change,
        release=str(chosen["release"] or record.get("release")),
        puddle=chosen["puddle"],
        history_entry={
            "kind": "rollback",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "snapshot": chosen["name"],
            "puddle": chosen["puddle"],
            "from_puddle": record.get("puddle"),
        },
    )
    return chosen


def format_online_result(result: OnlineResult, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(
            {
                "name": result.name,
                "kind": result.kind,
                "release": result.release,
                "puddle_id": result.puddle_id,
                "previous_puddle_id": result.previous_puddle_id,
                "snapshot": result.snapshot,
                "diff": result.diff.as_dict(),
                "smoke": result.smoke,
                "timings": result.timings,
            },
            indent=2,
        )
    verb = "upgraded to " + result.release if result.kind == "upgrade" else "updated"
    return (
        f"{result.name}: {verb} to puddle {result.puddle_id} "
        f"(from {result.previous_puddle_id or 'no puddle'}; snapshot {result.snapshot}; "
        f"smoke {sum(r['returncode'] == 0 for r in result.smoke)}/{len(result.smoke)} passed)\n"
        f"{result.diff.as_text()}"
    ).rstrip("\n")
