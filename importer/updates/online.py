"""Online update and major upgrade of an imported, running appliance.

``update NAME --puddle ID|LABEL`` and ``upgrade NAME --to-release R`` are
one list of timed steps over ssh (the ``ssh.config`` the import wrote):

1. check the appliance: its libvirt domain runs and ssh answers;
2. resolve and pin the puddle with the settings the build's manifest
   carries (for an upgrade: the target release's published manifest);
   with ``--puddle-dir DIR`` the local tree is served where the guest
   reaches the host for the length of the update
   (:mod:`importer.updates.local_puddles`);
3. read the installed package versions;
4. take a libvirt snapshot of the running domain (internal, with memory,
   kept in the appliance's qcow2 overlay);
5. replace the previous puddle's repo files with the new puddle's;
6. refresh, upgrade (apt or dnf: :mod:`undercloud_appliance.package_managers`);
7. run the profile's update (or upgrade) commands, then its smoke commands;
8. read the versions again, append to the puddle history inside the
   appliance and record the context in the import record and domain metadata.

Any failure after the snapshot reverts the domain to it (still running,
guest clock set to the host's), appends a ``failed`` entry to the history
and reports the failure *and* the revert in one line.  ``rollback NAME``
(:mod:`importer.updates.rollback`) reverts to a snapshot by hand; ``status``
lists them.

Argument lists built here are quoted with :func:`shlex.join` before ssh
hands them to the remote shell; only the profile's own commands (reviewed
like code) are run as shell text on purpose.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from importer import libvirt_domain
from importer.appliance_state import RECORD_NAME, read_record, record_change, state_dir_for
from importer.cache import write_manifest_with_signature
from importer.fetch import resolve_build_id
from importer.handoff import SSH_CONFIG_NAME, ssh_command, wait_for_ssh
from importer.published_build import PublishedBuild, read_cached_manifest, read_published_build
from importer.smoke import first_failure, run_smoke_commands
from importer.updates.local_puddles import (
    LOOPBACK_ADDRESS,
    check_puddle_tree,
    serve_puddle_tree,
)
from importer.updates.rollback import revert_running_appliance
from undercloud_appliance import puddle_history
from undercloud_appliance.errors import ApplianceError, NotFoundError
from undercloud_appliance.manifest import MANIFEST_NAME
from undercloud_appliance.package_managers import find_puddle_repo_files_command, plan_update
from undercloud_appliance.puddle_target import (
    GUEST_LOG_DIR,
    OUTPUT_TAIL_LINES,
    USER_MODE_HOST_ADDRESS,
    PuddleTarget,
    UpdateError,
    failure_summary,
    guest_visible_url,
    resolve_puddle_target,
)
from undercloud_appliance.puddles import check_repo_exists
from undercloud_appliance.steps import StepRunner
from undercloud_appliance.stores import open_store
from undercloud_appliance.version_diff import VersionDiff, diff_versions

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_SECONDS = 3600
SSH_CHECK_SECONDS = 120


@dataclass
class OnlineUpdateContext:
    """State shared by the steps of one online update or upgrade."""

    name: str
    uri: str
    requested_puddle: str
    kind: str = "update"  # or "upgrade"
    puddle_base: str | None = None
    #: A local puddle tree served to the guest for the length of the update.
    puddle_dir: Path | None = None
    target_release: str | None = None
    target_store: str | None = None
    target_label: str | None = None
    #: Fingerprint the manifests used must be signed by (--trusted-key, or
    #: the one the appliance was imported with).
    trusted_key: str | None = None
    state_dir: Path = Path()
    record: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    target_manifest: dict[str, Any] = field(default_factory=dict)
    target_build: PublishedBuild | None = None
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
    #: What the update started and stops when it ends (the --puddle-dir server).
    resources: ExitStack = field(default_factory=ExitStack)

    def note(self, text: str) -> None:
        log.debug("%s", text.rstrip())
        self.log_lines.append(text.rstrip("\n"))

    @property
    def what(self) -> str:
        if self.kind == "upgrade":
            return f"upgrade to {self.target_release}"
        return f"puddle {self.target.puddle_id if self.target else self.requested_puddle}"


@dataclass
class OnlineUpdateResult:
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
    context: OnlineUpdateContext,
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

    A failure raises UpdateError naming the context, the step, the packages
    the output blames and its most telling line.
    """
    remote = shell_text if shell_text is not None else shlex.join(argv)
    if sudo:
        remote = f"sudo -n -- /bin/sh -c {shlex.quote(remote)}"
    context.note(f"+ {shell_text if shell_text is not None else shlex.join(argv)}")
    try:
        completed = subprocess.run(
            ssh_command(context.ssh_config, context.name, remote),
            input=input_text if input_text is not None else "",
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UpdateError(f"{context.what}: {what} timed out after {timeout:.0f} s") from None
    output = completed.stdout + completed.stderr
    context.note(output)
    if completed.returncode in ok_codes:
        return completed.stdout
    context.note(f"exit status {completed.returncode}")
    tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
    log.warning("%s failed (exit status %d), last output:\n%s", what, completed.returncode, tail)
    if completed.returncode == 255:
        raise UpdateError(f"{context.what}: {what}: ssh failed: {failure_summary(output)}")
    manager = context.target.package_manager if context.target else None
    blamed = manager.failed_packages(output) if manager else []
    package = f" in package {', '.join(blamed)}" if blamed else ""
    raise UpdateError(
        f"{context.what}: {what} failed{package} "
        f"(exit status {completed.returncode}): {failure_summary(output)}"
    )


def write_guest_file(
    context: OnlineUpdateContext, path: str, content: str, mode: str = "0644"
) -> None:
    run_over_ssh(
        context,
        ["install", "-D", "-m", mode, "/dev/stdin", path],
        f"writing {path}",
        input_text=content,
    )


def installed_versions(context: OnlineUpdateContext, manager: Any) -> dict[str, str]:
    output = run_over_ssh(
        context, manager.list_installed_command(), "listing installed packages", sudo=False
    )
    return manager.parse_installed(output)


# -- steps --------------------------------------------------------------------


def step_check_appliance(context: OnlineUpdateContext) -> None:
    context.state_dir = state_dir_for(context.name)
    connection = libvirt_domain.connect(context.uri)
    context.domain = libvirt_domain.lookup(connection, context.name)
    context.record = read_record(context.state_dir)
    if context.domain is None or not context.record:
        raise NotFoundError(f"no imported appliance named {context.name!r}")
    context.metadata = libvirt_domain.read_metadata(context.domain) or {}
    state = libvirt_domain.state_name(context.domain)
    if state != "running":
        raise UpdateError(
            f"appliance {context.name!r} is not running ({state}): start it with "
            f"'virsh start {context.name}', or update a build directory with --offline"
        )
    context.ssh_config = context.state_dir / SSH_CONFIG_NAME
    manifest_path = context.record.get("manifest")
    if not manifest_path or not Path(manifest_path).is_file():
        raise NotFoundError(
            f"{context.state_dir / RECORD_NAME}: the build's manifest is not in the cache "
            f"({manifest_path or 'not recorded'}); import the appliance again"
        )
    context.trusted_key = context.trusted_key or context.record.get("trusted_key")
    # Verified again (signature included) each time: the commands it carries run with sudo.
    context.manifest = read_cached_manifest(Path(manifest_path), context.trusted_key)
    if context.trusted_key:
        context.record["trusted_key"] = context.trusted_key
    context.previous_puddle_id = context.record.get("puddle")
    # One ssh attempt can miss its 5 s banner under TCG on a busy host: retry a while.
    wait_for_ssh(
        context.ssh_config,
        context.name,
        SSH_CHECK_SECONDS,
        lambda: libvirt_domain.state_name(context.domain) == "running",
    )


def step_read_target_release(context: OnlineUpdateContext) -> None:
    """For an upgrade: the target release's manifest, read from the store."""
    if context.kind != "upgrade":
        context.target_manifest = context.manifest
        return
    assert context.target_release is not None
    store_url = context.target_store or context.record.get("store_url")
    if not store_url:
        raise UpdateError(f"upgrade to {context.target_release}: no --store given or recorded")
    store = open_store(store_url)
    try:
        build_id = resolve_build_id(store, context.target_release, context.target_label or "latest")
        context.target_build = read_published_build(
            store, context.target_release, build_id, context.trusted_key
        )
        context.target_manifest = context.target_build.manifest
    finally:
        store.close()
    context.note(f"upgrade {context.name} to {context.target_release} build {build_id}")


def step_serve_puddle_dir(context: OnlineUpdateContext) -> None:
    """--puddle-dir: serve the tree where the guest reaches the host, as the puddle base."""
    if context.puddle_dir is None:
        return
    resolved = context.target_manifest["profile"].get("resolved") or {}
    release = str(resolved.get("release") or context.target_manifest["release"])
    check_puddle_tree(
        context.puddle_dir, resolved.get("puddle") or {}, context.requested_puddle, release
    )
    network = context.metadata.get("network") or context.record.get("network")
    if network == "user":
        address = LOOPBACK_ADDRESS  # the guest's 10.0.2.2 (see guest_url)
    else:
        address = libvirt_domain.network_gateway(libvirt_domain.connect(context.uri), network)
        if address is None:
            raise UpdateError(
                f"--puddle-dir {context.puddle_dir}: libvirt network {network!r} has no host "
                "address to serve it on; serve the puddles yourself and give --puddle-base URL"
            )
    context.puddle_base = context.resources.enter_context(
        serve_puddle_tree(context.puddle_dir, address)
    )
    context.note(f"serving {context.puddle_dir} at {context.puddle_base} for this {context.kind}")


def step_resolve_puddle(context: OnlineUpdateContext) -> None:
    source = "the target release's manifest" if context.kind == "upgrade" else MANIFEST_NAME
    context.target = resolve_puddle_target(
        context.target_manifest, context.requested_puddle, context.puddle_base, source
    )
    network = context.metadata.get("network") or context.record.get("network")
    for repo in context.target.repos:
        check_repo_exists(repo["url"], context.target.puddle_id)
        visible = guest_url(repo["url"], network)
        if visible is None:
            raise UpdateError(
                f"{context.what}: {repo['url']} is on this host's loopback, which a guest on "
                f"libvirt network {network!r} cannot reach; serve the puddles on an address "
                "the guest can reach"
            )
    context.note(f"{context.kind} {context.name} to puddle {context.target.puddle_id}")


def guest_url(url: str, network: str | None) -> str | None:
    """``url`` as the running guest reaches it, or None when it cannot."""
    translated = guest_visible_url(url, USER_MODE_HOST_ADDRESS)
    if translated == url:
        return url
    return translated if network == "user" else None


def step_read_versions_before(context: OnlineUpdateContext) -> None:
    assert context.target is not None
    context.before = installed_versions(context, context.target.package_manager)


def step_take_snapshot(context: OnlineUpdateContext) -> None:
    assert context.target is not None
    reason = (
        f"before upgrade to {context.target_release}"
        if context.kind == "upgrade"
        else f"before update to puddle {context.target.puddle_id}"
    )
    context.snapshot = libvirt_domain.take_snapshot(
        context.domain, reason, context.record.get("release"), context.record.get("puddle")
    )
    context.note(f"snapshot {context.snapshot}: {reason}")


def step_switch_repositories(context: OnlineUpdateContext) -> None:
    target = context.target
    assert target is not None
    manager = target.package_manager
    previous_urls = [
        str(repo.get("url", "")) for repo in context.manifest["puddle"].get("repos") or []
    ]
    previous_urls += [guest_url(url, context.record.get("network")) or url for url in previous_urls]
    listed = run_over_ssh(
        context,
        find_puddle_repo_files_command(manager, previous_urls),
        "finding previous puddle repo files",
        ok_codes=(0, 1),
    )
    old_files = [line for line in listed.splitlines() if line.strip()]
    if old_files:
        run_over_ssh(context, ["rm", "-f", "--", *old_files], "removing previous repo files")
    network = context.record.get("network")
    guest_repos = [{**repo, "url": guest_url(repo["url"], network)} for repo in target.repos]
    plan = plan_update(manager, guest_repos, target.puddle_id)
    for path, content in plan.repo_files.items():
        write_guest_file(context, path, content)
    for what, argv in plan.commands:
        run_over_ssh(context, argv, what)


def step_run_profile_commands(context: OnlineUpdateContext) -> None:
    undercloud = (context.target_manifest["profile"].get("resolved") or {}).get("undercloud") or {}
    key = "upgrade_commands" if context.kind == "upgrade" else "update_commands"
    for command in undercloud.get(key) or []:
        run_over_ssh(
            context,
            [],
            f"{key[:-1].replace('_', ' ')} {command!r}",
            sudo=False,
            shell_text=str(command),
        )


def step_run_smoke_commands(context: OnlineUpdateContext) -> None:
    context.smoke = run_smoke_commands(context.ssh_config, context.name, context.target_manifest)
    failure = first_failure(context.smoke)
    if failure:
        raise UpdateError(f"{context.what}: {failure}")


def step_record_change(context: OnlineUpdateContext) -> None:
    target = context.target
    assert target is not None and context.snapshot is not None
    context.after = installed_versions(context, target.package_manager)
    context.diff = diff_versions(context.before, context.after)
    context.note(f"package versions, before -> after:\n{context.diff.as_text()}")
    append_history(context, "ok")
    write_guest_file(
        context,
        f"{GUEST_LOG_DIR}/{context.kind}-{target.puddle_id}.log",
        "\n".join(context.log_lines) + "\n",
    )
    release = context.target_release if context.kind == "upgrade" else context.record.get("release")
    entry = {
        "kind": context.kind,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "puddle": target.puddle_id,
        "from_puddle": context.previous_puddle_id,
        "release": release,
        "from_release": context.record.get("release"),
        "snapshot": context.snapshot,
        "diff": context.diff.as_dict(),
    }
    if context.kind == "upgrade":
        entry["manifest"] = save_target_manifest(context)
        context.record["manifest"] = entry["manifest"]
    context.metadata = record_change(
        context.state_dir,
        context.record,
        context.domain,
        context.metadata,
        release=str(release),
        puddle=target.puddle_id,
        history_entry=entry,
    )


def save_target_manifest(context: OnlineUpdateContext) -> str:
    """Keep the target release's manifest beside the appliance: later updates use it."""
    assert context.target_build is not None
    path = context.state_dir / f"{context.target_release}.{MANIFEST_NAME}"
    # The bytes as published (and their signed SHA256SUMS): checked again when used.
    write_manifest_with_signature(
        path, context.target_build.manifest_bytes, context.target_build.signed_sums
    )
    return str(path)


# -- the puddle history inside the appliance ----------------------------------


def append_history(context: OnlineUpdateContext, result: str, error: str | None = None) -> None:
    assert context.target is not None
    text = run_over_ssh(
        context,
        ["cat", puddle_history.HISTORY_PATH],
        "reading the puddle history",
        sudo=False,
        ok_codes=(0, 1),
    )
    entries = puddle_history.parse_history(text) if text.strip() else []
    details: dict[str, Any] = {"requested": context.requested_puddle, "kind": context.kind}
    if context.kind == "upgrade":
        details.update(release=context.target_release, from_release=context.record.get("release"))
    if context.snapshot:
        details["snapshot"] = context.snapshot
    if error:
        details["error"] = error
    entries.append(
        puddle_history.make_entry(
            context.target.puddle_id, context.previous_puddle_id, result, "online", **details
        )
    )
    write_guest_file(context, puddle_history.HISTORY_PATH, puddle_history.dump_history(entries))


# -- entry points -------------------------------------------------------------

PREPARING_STEPS = (
    step_check_appliance,
    step_read_target_release,
    step_serve_puddle_dir,
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


def apply_online_update(context: OnlineUpdateContext) -> OnlineUpdateResult:
    """Run the steps, then stop what they started (the --puddle-dir server)."""
    with context.resources:
        return run_online_steps(context)


def run_online_steps(context: OnlineUpdateContext) -> OnlineUpdateResult:
    """Run the steps; on failure after the snapshot, revert to it and say so."""
    runner: StepRunner[OnlineUpdateContext] = StepRunner(PREPARING_STEPS)
    runner.run(context)
    try:
        StepRunner(GUARDED_STEPS, runner.timings).run(context)
    except (ApplianceError, subprocess.SubprocessError, OSError) as error:
        assert context.snapshot is not None
        message = str(error)
        log.warning(
            "%s failed; reverting %s to snapshot %s", context.what, context.name, context.snapshot
        )
        started = time.monotonic()
        revert_running_appliance(context.domain, context.snapshot, context.ssh_config)
        runner.timings.seconds["revert-to-snapshot"] = time.monotonic() - started
        try:
            append_history(context, "failed", error=message)
        except ApplianceError as history_error:
            log.warning("could not record the failure in the history: %s", history_error)
        raise UpdateError(
            f"{message}; reverted {context.name} to snapshot {context.snapshot} "
            f"({context.previous_puddle_id or 'no puddle'} again)"
        ) from None
    assert context.target is not None and context.snapshot is not None
    return OnlineUpdateResult(
        name=context.name,
        kind=context.kind,
        release=str(context.record.get("release")),
        puddle_id=context.target.puddle_id,
        previous_puddle_id=context.previous_puddle_id,
        snapshot=context.snapshot,
        diff=context.diff,
        smoke=context.smoke,
        timings=runner.timings.as_dict(),
    )


def update_online(
    name: str,
    requested_puddle: str,
    uri: str,
    puddle_base: str | None = None,
    trusted_key: str | None = None,
    puddle_dir: Path | None = None,
) -> OnlineUpdateResult:
    """``update NAME --puddle ID|LABEL``: see the module docstring."""
    return apply_online_update(
        OnlineUpdateContext(
            name=name,
            uri=uri,
            requested_puddle=requested_puddle,
            puddle_base=puddle_base,
            puddle_dir=puddle_dir,
            trusted_key=trusted_key,
        )
    )


def upgrade_online(
    name: str,
    to_release: str,
    uri: str,
    requested_puddle: str = "latest",
    store_url: str | None = None,
    label: str | None = None,
    puddle_base: str | None = None,
    trusted_key: str | None = None,
    puddle_dir: Path | None = None,
) -> OnlineUpdateResult:
    """``upgrade NAME --to-release R``: the target release's repos, upgrade and smoke commands."""
    return apply_online_update(
        OnlineUpdateContext(
            name=name,
            uri=uri,
            requested_puddle=requested_puddle,
            kind="upgrade",
            puddle_base=puddle_base,
            puddle_dir=puddle_dir,
            target_release=to_release,
            target_store=store_url,
            target_label=label,
            trusted_key=trusted_key,
        )
    )
