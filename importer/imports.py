"""``import``: fetch a build and boot it under libvirt, as a list of timed steps.

The cached image is only ever a read-only backing file: each appliance
gets a qcow2 overlay in its state directory (importer.appliance_state), so
an import from the cache costs the same whatever the image's size.

Importing the build that already runs under the name is a no-op that
re-checks ssh and rewrites ``ssh.config``/``hosts``; a different build is
refused without ``--replace``.  Those files go to ``handoff_dir``; one there
that the tool did not write stops the import before it changes anything.
A failing fresh import removes the domain and state directory it created
before the error is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from importer import libvirt_domain, qemu_access, virtual_bmc, virtual_nodes
from importer.appliance_state import (
    CONSOLE_LOG_NAME,
    KNOWN_HOSTS_NAME,
    OVERLAY_NAME,
    clear_state,
    has_appliance_state,
    has_generated_key,
    read_record,
    remove_virtual_nodes,
    state_dir_for,
    teardown,
    write_record,
)
from importer.cache import ImageCache
from importer.customise import Customisation, customise_overlay
from importer.fetch import FetchedImage, fetch_image
from importer.handoff import (
    INVENTORY_NAME,
    SSH_CONFIG_NAME,
    NodeEndpoint,
    SshEndpoint,
    SshKey,
    check_handoff_files,
    check_overwritable,
    generated_ssh_key,
    given_ssh_key,
    ssh_command,
    ssh_config_text,
    wait_for_ssh,
    write_handoff,
)
from importer.host_keys import (
    HostKey,
    appliance_host_keys,
    recorded_host_keys,
    write_known_hosts,
)
from importer.published_build import read_cached_manifest
from importer.smoke import first_failure, run_smoke_commands
from undercloud_appliance.errors import ApplianceError, VirtError
from undercloud_appliance.manifest import write_file_atomically
from undercloud_appliance.retry_policies import poll_until
from undercloud_appliance.steps import StepRunner, StepTimings

log = logging.getLogger(__name__)

GIB = 1024**3
# Steps that wait for the guest rather than do our own work.
GUEST_BOOT_STEPS = ("wait-for-address", "wait-for-ssh")


@dataclass(frozen=True)
class ImportOptions:
    name: str
    store_url: str
    release: str
    label: str | None = None
    build_id: str | None = None
    memory_mib: int = 8192
    vcpus: int = 4
    disk_size_gib: int | None = None
    ssh_key: Path | None = None
    uri: str = libvirt_domain.DEFAULT_URI
    network: str = "default"
    replace: bool = False
    trusted_key: str | None = None
    handoff_dir: Path = field(default_factory=Path.cwd)
    boot_timeout: float = 600.0
    cache: ImageCache | None = None
    nodes: int = 0
    provisioning_link: str = "auto"
    bmc_port: int | None = None
    qemu_user: str = libvirt_domain.QEMU_USER_LIBVIRT


@dataclass
class ImportContext:
    options: ImportOptions
    state_dir: Path
    connection: Any = None
    fetched: FetchedImage | None = None
    key: SshKey | None = None
    host_keys: list[HostKey] | None = None
    domain: Any = None
    existing_metadata: dict[str, str] | None = None
    already_imported: bool = False
    created_state_dir: bool = False
    generated_key: bool = False
    created_domain: bool = False
    layer: Path | None = None
    layer_reused: bool = False
    ssh_port: int = 22
    address: str | None = None
    ssh_config: Path | None = None
    inventory: Path | None = None
    nodes_plan: virtual_nodes.NodesPlan | None = None
    node_uuids: list[str] = field(default_factory=list)
    bmc: virtual_bmc.BmcEndpoint | None = None
    nodes_file: Path | None = None

    @property
    def overlay(self) -> Path:
        return self.state_dir / OVERLAY_NAME

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / KNOWN_HOSTS_NAME


@dataclass
class ImportResult:
    name: str
    record: dict[str, Any]
    ssh_config: Path
    inventory: Path
    already_imported: bool
    timings: StepTimings

    @property
    def ssh_hint(self) -> str:
        config = SSH_CONFIG_NAME if self.ssh_config.parent == Path.cwd() else str(self.ssh_config)
        return f"ssh -F {config} {self.name}"


# -- steps that decide what to do -------------------------------------------


def step_check_handoff_files(context: ImportContext) -> None:
    names = [SSH_CONFIG_NAME, INVENTORY_NAME]
    if context.options.nodes > 0:
        names.append(virtual_nodes.NODES_FILE_NAME)
    check_handoff_files(context.options.handoff_dir, names, context.state_dir.parent)


def step_check_ssh_key(context: ImportContext) -> None:
    if context.options.ssh_key is not None:
        context.key = given_ssh_key(context.options.ssh_key)


def step_connect_libvirt(context: ImportContext) -> None:
    context.connection = libvirt_domain.connect(context.options.uri)


def step_fetch(context: ImportContext) -> None:
    options = context.options
    context.fetched = fetch_image(
        options.store_url,
        options.release,
        label=options.label,
        build_id=options.build_id,
        cache=options.cache,
        trusted_key=options.trusted_key,
    )


def step_inspect_existing(context: ImportContext) -> None:
    replaced = _inspect_existing(context)
    if not context.already_imported and context.options.network == "default":
        libvirt_domain.check_network_active(context.connection)
    if replaced is not None:
        log.info("replacing appliance %s", context.options.name)
        teardown(context.connection, replaced, context.state_dir)


def _inspect_existing(context: ImportContext) -> Any | None:
    """Decide what to do with a domain of that name; return one to replace."""
    options, fetched = context.options, context.fetched
    assert fetched is not None
    domain = libvirt_domain.lookup(context.connection, options.name)
    if domain is None:
        if has_appliance_state(context.state_dir):
            log.info("removing stale state in %s (no domain %s)", context.state_dir, options.name)
        teardown(context.connection, None, context.state_dir)
        return None
    metadata = libvirt_domain.read_metadata(domain)
    if metadata is None:
        raise VirtError(
            f"libvirt domain {options.name!r} already exists and was not created by "
            "undercloud-appliance: choose another --name"
        )
    if metadata.get("sha256") == fetched.sha256 and not options.replace:
        plan = virtual_nodes.read_plan(context.state_dir)
        count = plan.count if plan else 0
        if count != options.nodes:
            raise ApplianceError(
                f"appliance {options.name!r} has {count} virtual node(s); "
                f"importing it with --nodes {options.nodes} needs --replace"
            )
        context.domain = domain
        context.existing_metadata = metadata
        context.already_imported = True
        context.nodes_plan = plan
        return None
    if not options.replace:
        raise ApplianceError(
            f"appliance {options.name!r} runs build {metadata.get('build-id')} of "
            f"{metadata.get('release')}; importing build {fetched.build_id} needs --replace"
        )
    return domain


# -- steps of a fresh import ---------------------------------------------------


def step_prepare_layer(context: ImportContext) -> None:
    """The customised layer over the cached image: reused when it exists, else made."""
    fetched = context.fetched
    assert fetched is not None
    context.created_state_dir = not context.state_dir.exists()
    context.state_dir.mkdir(parents=True, exist_ok=True)
    if context.key is None:
        context.generated_key = not has_generated_key(context.state_dir)
        context.key = generated_ssh_key(context.state_dir)
    context.host_keys = appliance_host_keys(context.state_dir)
    cache = context.options.cache or ImageCache.default()
    grow_to = grow_to_bytes(context)
    customisation = Customisation(
        hostname=context.options.name,
        authorized_key=context.key.public_text(),
        grow_root=grow_to is not None,
        host_keys=tuple(context.host_keys),
    )
    context.layer = cache.layer_path(fetched.sha256, layer_key(customisation, grow_to))
    with cache.locked(fetched.sha256):
        if context.layer.is_file():
            context.layer_reused = True
            log.info("reusing customised layer %s", context.layer.name)
            return
        context.layer.parent.mkdir(parents=True, exist_ok=True)
        temporary = context.layer.with_name(f".{context.layer.stem}.{os.getpid()}.tmp.qcow2")
        try:
            _create_qcow2(temporary, fetched.image_path, grow_to)
            report = customise_overlay(temporary, customisation)
            # It holds the appliance's private host keys: the owner's only
            # (libvirt's qemu user is let in by step_grant_qemu_access).
            os.chmod(temporary, 0o400)
            os.replace(temporary, context.layer)
        finally:
            temporary.unlink(missing_ok=True)
    log.info("customised layer %s (root %s)", context.layer.name, report.root_device)


def layer_key(customisation: Customisation, grow_to: int | None) -> str:
    """What makes two layers interchangeable: key, hostname, disk size, host keys."""
    text = "\n".join(
        (
            customisation.authorized_key.strip(),
            customisation.hostname,
            str(grow_to or 0),
            *(key.public_key() for key in customisation.host_keys),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def step_create_overlay(context: ImportContext) -> None:
    assert context.layer is not None
    _create_qcow2(context.overlay, context.layer, None)


def _create_qcow2(path: Path, backing: Path, size: int | None) -> None:
    command = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing)]
    command.append(str(path))
    if size is not None:
        command.append(str(size))
    _run(command, f"creating {path.name}")


def grow_to_bytes(context: ImportContext) -> int | None:
    """The disk size when --disk-size asks for more than the image has."""
    size_gib = context.options.disk_size_gib
    if size_gib is None or context.fetched is None:
        return None
    wanted = size_gib * GIB
    return wanted if wanted > context.fetched.manifest["image"]["virtual_size"] else None


def step_create_virtual_nodes(context: ImportContext) -> None:
    """Nodes (powered off), their provisioning link and the BMC emulator, before the appliance."""
    options = context.options
    if options.nodes <= 0:
        return
    virtual_nodes.check_memory(options.memory_mib, options.nodes)
    # The port is checked before anything is made; the emulator starts last.
    listen, _ = bmc_addresses(context)
    port = options.bmc_port or free_local_port()
    virtual_bmc.check_port_free(listen, port)
    assert context.fetched is not None
    manifest = context.fetched.manifest
    provisioning = manifest["profile"]["resolved"].get("provisioning")
    if not provisioning:
        raise virtual_nodes.NodesError(
            f"--nodes: build {manifest['build_id']} has no provisioning network settings "
            "(built before they existed): rebuild it"
        )
    context.nodes_plan = virtual_nodes.plan_nodes(
        context.connection,
        options.name,
        options.nodes,
        options.provisioning_link,
        port,
        provisioning=provisioning,
        ironic_images=manifest.get("ironic_images"),
    )
    virtual_nodes.write_plan(context.state_dir, context.nodes_plan)
    _define_nodes_and_start_bmc(context)


def _define_nodes_and_start_bmc(context: ImportContext) -> None:
    """Define the plan's nodes (those missing) and start their emulator (if it is not running)."""
    plan = context.nodes_plan
    assert plan is not None
    context.node_uuids = virtual_nodes.define_nodes(
        context.connection, context.state_dir, plan, context.options.qemu_user
    )
    listen, guest = bmc_addresses(context)
    context.bmc = virtual_bmc.start(
        context.state_dir,
        uri=context.options.uri,
        listen_address=listen,
        guest_address=guest,
        port=plan.bmc_port,
        allowed_instances=context.node_uuids,
    )


def bmc_addresses(context: ImportContext) -> tuple[str, str]:
    """Where the BMC emulator listens on the host, and the address the appliance uses."""
    if context.options.network == "user":
        return "127.0.0.1", "10.0.2.2"  # qemu user networking's alias for host loopback
    gateway = libvirt_domain.network_gateway(context.connection, "default")
    if gateway is None:
        raise VirtError("libvirt network 'default' has no host address for the BMC emulator")
    return gateway, gateway


def step_grant_qemu_access(context: ImportContext) -> None:
    """libvirt's qemu user may reach the state directory and read the backing images."""
    if context.options.qemu_user != libvirt_domain.QEMU_USER_LIBVIRT:
        return
    identity = libvirt_domain.qemu_process_identity(context.connection)
    if identity is None or identity[0] in (0, os.getuid()):
        return  # qemu runs as root by libvirt's own configuration, or as us (qemu:///session)
    fetched = context.fetched
    assert fetched is not None and context.layer is not None
    directories = [context.state_dir, context.layer.parent, fetched.image_path.parent]
    nodes_dir = virtual_nodes.nodes_dir(context.state_dir)
    if nodes_dir.is_dir():
        directories.append(nodes_dir)
    qemu_access.grant_qemu_access(
        *identity, directories=directories, readable=[context.layer, fetched.image_path]
    )


def step_define_and_start(context: ImportContext) -> None:
    options, fetched = context.options, context.fetched
    assert fetched is not None
    if options.network == "user":
        context.ssh_port = free_local_port()
    context.domain = libvirt_domain.define_and_start(
        context.connection,
        libvirt_domain.DomainSpec(
            name=options.name,
            overlay=context.overlay,
            memory_mib=options.memory_mib,
            vcpus=options.vcpus,
            network=options.network,
            ssh_port=context.ssh_port if options.network == "user" else None,
            console_log=context.state_dir / CONSOLE_LOG_NAME,
            metadata=domain_metadata(context),
            provisioning=context.nodes_plan.appliance_nic() if context.nodes_plan else None,
            backing_chain=(context.layer, fetched.image_path) if context.layer else (),
            qemu_user=options.qemu_user,
        ),
    )
    context.created_domain = True


# -- steps shared by fresh imports and re-imports ---------------------------------


def step_start_if_stopped(context: ImportContext) -> None:
    if libvirt_domain.ensure_running(context.domain):
        log.info("started domain %s", context.options.name)
    metadata = context.existing_metadata or {}
    context.ssh_port = int(metadata.get("port") or 22)
    if context.key is None:
        context.key = recorded_ssh_key(context.state_dir) or generated_ssh_key(context.state_dir)


def recorded_ssh_key(state_dir: Path) -> SshKey | None:
    """The key the appliance was imported with (maybe a --ssh-key given then)."""
    private = read_record(state_dir).get("ssh_key")
    if not private:
        return None
    try:
        return given_ssh_key(Path(private))
    except ApplianceError:
        return None


def step_wait_for_address(context: ImportContext) -> None:
    if context.options.network == "user" or (
        context.existing_metadata and context.existing_metadata.get("network") == "user"
    ):
        context.address = "127.0.0.1"
        return

    def lease() -> str:
        if not context.domain.isActive():
            raise VirtError(f"domain {context.options.name!r} stopped: {console_tail(context)}")
        address = libvirt_domain.lease_address(context.domain)
        if address is None:
            raise LookupError("no DHCP lease yet")
        return address

    try:
        context.address = poll_until(context.options.boot_timeout, LookupError)(lease)
    except LookupError:
        raise VirtError(
            f"domain {context.options.name!r} got no DHCP lease within "
            f"{context.options.boot_timeout:.0f}s: {console_tail(context)}"
        ) from None


def step_wait_for_ssh(context: ImportContext) -> None:
    assert context.key is not None and context.address is not None
    pin_host_keys(context)
    context.ssh_config = context.state_dir / SSH_CONFIG_NAME
    write_file_atomically(context.ssh_config, ssh_config_text(endpoint(context)).encode())
    try:
        wait_for_ssh(
            context.ssh_config,
            context.options.name,
            context.options.boot_timeout,
            still_running=lambda: bool(context.domain.isActive()),
        )
    except VirtError as error:
        raise VirtError(f"{error}; {console_tail(context)}") from None


def pin_host_keys(context: ImportContext) -> None:
    """known_hosts for the appliance's address and port now, before ssh first connects.

    Rewritten by every import (a fresh import with user networking gets a
    new port) from the host keys in the state directory.
    """
    assert context.address is not None
    keys = context.host_keys or recorded_host_keys(context.state_dir)
    if keys is not None:
        write_known_hosts(context.known_hosts, context.address, context.ssh_port, keys)
        return
    # Imported by a version that let ssh learn the key on first use.
    if not context.known_hosts.is_file():
        raise ApplianceError(
            f"appliance {context.options.name!r} has no host keys in {context.state_dir} and no "
            f"{context.known_hosts}: nothing to check its ssh host key against; "
            "import it again with --replace"
        )
    log.warning(
        "appliance %s was imported before host keys were pinned: %s holds the key ssh "
        "learnt on first use; --replace pins keys made here",
        context.options.name,
        context.known_hosts,
    )


def step_write_handoff(context: ImportContext) -> None:
    libvirt_domain.write_metadata(context.domain, domain_metadata(context))
    plan = context.nodes_plan
    # A plan from before nodes had fixed addresses names none: no node entries.
    nodes = (
        [
            NodeEndpoint(name, address)
            for name, address in zip(plan.node_names, plan.node_addresses, strict=True)
        ]
        if plan is not None and plan.node_addresses
        else []
    )
    context.ssh_config, context.inventory = write_handoff(
        endpoint(context), context.options.handoff_dir, nodes
    )


def step_ensure_virtual_nodes(context: ImportContext) -> None:
    """A re-import: the nodes stay as they are; a BMC emulator that stopped is started."""
    if context.nodes_plan is not None:
        _define_nodes_and_start_bmc(context)


def _remove_stale_nodes_file(context: ImportContext) -> None:
    """An import without nodes removes the nodes file an import with nodes left.

    Only a file that lists nothing but this appliance's nodes (which
    ``--replace`` just removed): tools must not enroll nodes that are gone.
    """
    path = context.options.handoff_dir / virtual_nodes.NODES_FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    if virtual_nodes.is_nodes_file_of(text, context.options.name):
        path.unlink(missing_ok=True)
        log.info("removed %s: appliance %s has no virtual nodes now", path, context.options.name)


def step_write_nodes_file(context: ImportContext) -> None:
    """``nodes.yaml`` beside ssh.config, and the same file in the appliance user's home."""
    plan, bmc = context.nodes_plan, context.bmc
    if plan is None or bmc is None:
        _remove_stale_nodes_file(context)
        return
    assert context.ssh_config is not None
    text = virtual_nodes.nodes_file_text(
        virtual_nodes.nodes_document(plan, context.node_uuids, bmc)
    ).encode()
    context.nodes_file = context.options.handoff_dir / virtual_nodes.NODES_FILE_NAME
    check_overwritable(context.nodes_file, context.state_dir.parent)
    write_file_atomically(context.nodes_file, text, mode=0o600)
    write_file_atomically(
        virtual_nodes.nodes_dir(context.state_dir) / virtual_nodes.NODES_FILE_NAME,
        text,
        mode=0o600,
    )
    remote = f"umask 077 && cat > .{virtual_nodes.NODES_FILE_NAME}.tmp && " + (
        f"mv .{virtual_nodes.NODES_FILE_NAME}.tmp {virtual_nodes.NODES_FILE_NAME}"
    )
    _send_to_appliance(context, remote, text, virtual_nodes.NODES_FILE_NAME)
    if plan.node_addresses:
        # dnsmasq re-reads its dhcp-hostsfile on SIGHUP.
        hosts_file = DHCP_HOSTS_FILE
        remote = (
            f"sudo sh -c 'cat > {hosts_file}.tmp && mv {hosts_file}.tmp {hosts_file} && "
            "{ pkill -HUP -x dnsmasq || true; }'"
        )
        _send_to_appliance(
            context, remote, virtual_nodes.dhcp_hosts_text(plan).encode(), hosts_file
        )


# Read by the appliance's dnsmasq (elements/debian-undercloud, dhcp-hostsfile).
DHCP_HOSTS_FILE = "/etc/undercloud-appliance/dhcp-hosts"


def _send_to_appliance(context: ImportContext, remote: str, data: bytes, what: str) -> None:
    """Run ``remote`` in the appliance with ``data`` on its standard input."""
    assert context.ssh_config is not None
    completed = subprocess.run(
        ssh_command(context.ssh_config, context.options.name, remote),
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        detail = completed.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise ApplianceError(
            f"cannot copy {what} into appliance {context.options.name!r}: {detail[0]}"
        )


DECIDING_STEPS = (
    step_check_handoff_files,
    step_check_ssh_key,
    step_connect_libvirt,
    step_fetch,
    step_inspect_existing,
)
FRESH_IMPORT_STEPS = (
    step_prepare_layer,
    step_create_overlay,
    step_create_virtual_nodes,
    step_grant_qemu_access,
    step_define_and_start,
    step_wait_for_address,
    step_wait_for_ssh,
    step_write_handoff,
    step_write_nodes_file,
)
RE_IMPORT_STEPS = (
    step_start_if_stopped,
    step_ensure_virtual_nodes,
    step_wait_for_address,
    step_wait_for_ssh,
    step_write_handoff,
    step_write_nodes_file,
)


def endpoint(context: ImportContext) -> SshEndpoint:
    assert context.key is not None and context.address is not None
    return SshEndpoint(
        name=context.options.name,
        host=context.address,
        port=context.ssh_port,
        identity=context.key.private,
        known_hosts=context.known_hosts,
    )


def domain_metadata(context: ImportContext) -> dict[str, str]:
    fetched = context.fetched
    assert fetched is not None
    network = context.options.network
    if context.already_imported and context.existing_metadata:
        network = context.existing_metadata.get("network", network)
    values = {
        "build-id": fetched.build_id,
        "release": fetched.release,
        "puddle": fetched.puddle_id or "",
        "sha256": fetched.sha256,
        "network": network,
        "port": str(context.ssh_port),
        "state-dir": str(context.state_dir),
    }
    if context.already_imported and context.existing_metadata:
        # Online updates and upgrades moved the appliance on from its build.
        for key in ("release", "puddle"):
            if key in context.existing_metadata:
                values[key] = context.existing_metadata[key]
    if context.address:
        values["address"] = context.address
    return values


def run_import(options: ImportOptions) -> ImportResult:
    context = ImportContext(options, state_dir_for(options.name))
    timings = StepTimings()
    StepRunner(DECIDING_STEPS, timings).run(context)
    if context.already_imported:
        log.info("build %s is already imported as %s", context.fetched.build_id, options.name)
        StepRunner(RE_IMPORT_STEPS, timings).run(context)
    else:
        try:
            StepRunner(FRESH_IMPORT_STEPS, timings).run(context)
        except BaseException:
            undo_fresh_import(context)
            raise
    record = import_record(context, timings)
    write_record(context.state_dir, record)
    assert context.ssh_config is not None and context.inventory is not None
    return ImportResult(
        options.name,
        record,
        context.ssh_config,
        context.inventory,
        context.already_imported,
        timings,
    )


def smoke_test_import(result: ImportResult) -> str | None:
    """Run the build's smoke commands in the imported appliance; print and record them.

    Returns the first failure (None when all passed); the caller decides
    what a failure means; the appliance stays imported either way.
    """
    # The commands run with sudo: the manifest is checked again (signature
    # included) when the appliance was imported with a trusted key.
    manifest = read_cached_manifest(
        Path(result.record["manifest"]), result.record.get("trusted_key")
    )
    results = run_smoke_commands(result.ssh_config, result.name, manifest)
    for smoke in results:
        verdict = "ok" if smoke["returncode"] == 0 else f"FAILED (exit {smoke['returncode']})"
        print(f"smoke: {smoke['command']}: {verdict} ({smoke['seconds']:.1f}s)")
    result.record["smoke"] = results
    write_record(state_dir_for(result.name), result.record)
    return first_failure(results)


def undo_fresh_import(context: ImportContext) -> None:
    """Leave nothing half-created: the domain and state directory made by this run."""
    if context.created_domain and context.domain is not None:
        with contextlib.suppress(ApplianceError):
            libvirt_domain.remove_domain(context.domain)
    if context.nodes_plan is not None and not context.already_imported:
        with contextlib.suppress(ApplianceError):
            remove_virtual_nodes(context.connection, context.state_dir, context.nodes_plan)
    clear_state(context.state_dir, keep_key=not context.generated_key)
    if context.created_state_dir and context.state_dir.exists():
        shutil.rmtree(context.state_dir, ignore_errors=True)


def import_record(context: ImportContext, timings: StepTimings) -> dict[str, Any]:
    fetched = context.fetched
    assert fetched is not None
    seconds = timings.as_dict()
    previous_record = read_record(context.state_dir) if context.already_imported else {}
    guest_boot = sum(seconds.get(name, 0.0) for name in GUEST_BOOT_STEPS)
    record = {
        "name": context.options.name,
        "release": fetched.release,
        "build_id": fetched.build_id,
        "puddle": fetched.puddle_id,
        "sha256": fetched.sha256,
        "image": str(fetched.image_path),
        "manifest": str(fetched.manifest_path),
        "store_url": previous_record.get("store_url") or context.options.store_url,
        "trusted_key": context.options.trusted_key or previous_record.get("trusted_key"),
        "overlay": str(context.overlay),
        "layer": str(context.layer) if context.layer else previous_record.get("layer"),
        "layer_reused": context.layer_reused,
        "network": domain_metadata(context)["network"],
        "address": context.address,
        "port": context.ssh_port,
        "ssh_key": str(context.key.private) if context.key else None,
        "uri": context.options.uri,
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "already_imported": context.already_imported,
        "timings": seconds,
        "nodes": (
            {
                "count": context.nodes_plan.count,
                "link": context.nodes_plan.link,
                "names": context.nodes_plan.node_names,
                "bmc": context.bmc.host_url if context.bmc else None,
                "nodes_file": str(context.nodes_file) if context.nodes_file else None,
            }
            if context.nodes_plan
            else None
        ),
        "our_seconds": round(sum(seconds.values()) - guest_boot, 3),
        "guest_boot_seconds": round(guest_boot, 3),
    }
    # A re-import keeps what online updates and upgrades changed since.
    for key in ("release", "puddle", "manifest", "changes"):
        if previous_record.get("changes") and key in previous_record:
            record[key] = previous_record[key]
    # ... and the smoke results of the import it repeats (it runs none).
    if "smoke" in previous_record:
        record["smoke"] = previous_record["smoke"]
    return record


def console_tail(context: ImportContext) -> str:
    try:
        lines = (context.state_dir / CONSOLE_LOG_NAME).read_text(errors="replace").splitlines()
    except OSError:
        return "no console log"
    last = [line.strip() for line in lines if line.strip()][-1:]
    return f"last console line: {last[0][:160]!r}" if last else "console log is empty"


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command: list[str], what: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise ApplianceError(f"{what}: {command[0]} is not installed") from None
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or "").strip().splitlines()[-1:] or [f"exit {error.returncode}"]
        raise ApplianceError(f"{what}: {detail[0]}") from None
