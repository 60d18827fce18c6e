"""Every libvirt call of the importer: connection, domain XML, lifecycle, metadata, snapshots.

qemu runs as libvirt's own unprivileged user (``libvirt-qemu`` on Debian;
libvirt's default dynamic DAC label), never as root: libvirt chowns the
overlay to that user while the domain runs and back afterwards, and leaves
the read-only backing images (the customised layer, the cached image) as
they are: importer.qemu_access lets that user read them instead.
``--qemu-user importer`` (``QEMU_USER_IMPORTER``) asks for the old way: qemu
as the importing user, nothing relabelled.  Import metadata is
kept in the domain's ``<metadata>`` under ``METADATA_NAMESPACE``: a domain
without it was not created by this tool and is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from undercloud_appliance.errors import VirtError
from undercloud_appliance.hypervisor import accelerator, libvirt_domain_type

log = logging.getLogger(__name__)

DEFAULT_URI = "qemu:///system"
METADATA_NAMESPACE = "https://undercloud-appliance.invalid/import/1"
METADATA_PREFIX = "ua"
QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
NETWORK_MODES = ("default", "user")
# Whom qemu runs as: libvirt's qemu user (dynamic DAC), or the importing user.
QEMU_USER_LIBVIRT = "libvirt"
QEMU_USER_IMPORTER = "importer"
QEMU_USERS = (QEMU_USER_LIBVIRT, QEMU_USER_IMPORTER)


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise VirtError(
            "the libvirt Python bindings are missing: install Debian's python3-libvirt "
            "and use a venv made with --system-site-packages"
        ) from None
    # libvirt prints every error on stderr by default; ours become one line.
    libvirt.registerErrorHandler(lambda _context, _error: None, None)
    return libvirt


def connect(uri: str) -> Any:
    libvirt = _libvirt()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as error:
        raise VirtError(f"cannot connect to libvirt at {uri}: {_message(error)}") from None


def _message(error: Any) -> str:
    text = error.get_error_message() if hasattr(error, "get_error_message") else str(error)
    return (text or str(error)).splitlines()[0]


@dataclass(frozen=True)
class ProvisioningNic:
    """One end of the provisioning link between the appliance and its virtual nodes.

    ``network``: a port on the isolated libvirt network of that name.  Else a
    qemu UDP socket netdev: sends to 127.0.0.1:``remote_port``, receives on
    127.0.0.1:``local_port`` (a point-to-point cable that needs no bridge).
    """

    mac: str
    network: str | None = None
    local_port: int | None = None
    remote_port: int | None = None

    def xml(self, pci_slot: int | None = None) -> str:
        if self.network is not None:
            source = f"<source network={quoteattr(self.network)}/>"
            kind = "network"
        else:
            source = (
                f"<source address='127.0.0.1' port='{self.remote_port}'>"
                f"<local address='127.0.0.1' port='{self.local_port}'/></source>"
            )
            kind = "udp"
        address = (
            f"<address type='pci' domain='0x0000' bus='0x00' slot='{pci_slot:#04x}' "
            "function='0x0'/>"
            if pci_slot is not None
            else ""
        )
        return (
            f"<interface type='{kind}'><mac address={quoteattr(self.mac)}/>{source}"
            f"<model type='virtio'/>{address}</interface>"
        )


# The appliance's provisioning NIC sits after its first NIC (slot 0x10 with
# user networking, a lower automatic slot on a libvirt network), so the guest
# names it eth1 in both cases.
PROVISIONING_PCI_SLOT = 0x11


@dataclass(frozen=True)
class DomainSpec:
    name: str
    overlay: Path
    memory_mib: int
    vcpus: int
    network: str  # "default" (libvirt NAT network) or "user" (qemu user networking)
    ssh_port: int | None  # the host port forwarded to the guest's 22 with "user"
    console_log: Path
    metadata: dict[str, str]
    provisioning: ProvisioningNic | None = None
    # The read-only images under the overlay, nearest first (the customised
    # layer, the cached image); libvirt is told them rather than probing.
    backing_chain: tuple[Path, ...] = ()
    qemu_user: str = QEMU_USER_LIBVIRT


@dataclass(frozen=True)
class NodeSpec:
    """A virtual baremetal node: an empty disk, network boot first, powered off."""

    name: str
    disk: Path
    memory_mib: int
    vcpus: int
    nic: ProvisioningNic
    console_log: Path
    appliance: str
    qemu_user: str = QEMU_USER_LIBVIRT


def metadata_xml(values: dict[str, str]) -> str:
    fields = "".join(
        f"<{METADATA_PREFIX}:{key}>{escape(str(value))}</{METADATA_PREFIX}:{key}>"
        for key, value in values.items()
        if value is not None
    )
    return (
        f"<{METADATA_PREFIX}:appliance xmlns:{METADATA_PREFIX}={quoteattr(METADATA_NAMESPACE)}>"
        f"{fields}</{METADATA_PREFIX}:appliance>"
    )


def _platform_xml() -> str:
    """What the appliance and its nodes share: firmware features, CPU, clock, lifecycle."""
    cpu = "<cpu mode='host-passthrough'/>" if accelerator() == "kvm" else ""
    return f"""<features><acpi/><apic/></features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>"""


def _backing_chain_xml(backing_chain: tuple[Path, ...]) -> str:
    """The backing images, never relabelled: they are shared by other appliances.

    With dynamic DAC, libvirt would chown every image of the chain to its
    qemu user for good (it restores the owner of the top image only), and
    that user could then make the verified cached image writable.
    """
    if not backing_chain:
        return ""
    opened = "".join(
        f"<backingStore type='file'><format type='qcow2'/><source file={quoteattr(str(path))}>"
        "<seclabel model='dac' relabel='no'/></source>"
        for path in backing_chain
    )
    return opened + "<backingStore/>" + "</backingStore>" * len(backing_chain)


def _disk_and_console_xml(
    disk: Path, console_log: Path, append_log: bool, backing_chain: tuple[Path, ...] = ()
) -> str:
    return f"""<disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file={quoteattr(str(disk))}/>
      {_backing_chain_xml(backing_chain)}
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'>
      <log file={quoteattr(str(console_log))} append='{"on" if append_log else "off"}'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>"""


def _seclabel_xml(qemu_user: str) -> str:
    """Whom qemu runs as (see the module docstring): libvirt's default, or the importing user."""
    if qemu_user not in QEMU_USERS:
        raise VirtError(f"qemu user {qemu_user!r}: use one of {', '.join(QEMU_USERS)}")
    if qemu_user == QEMU_USER_LIBVIRT:
        return ""
    label = f"+{os.getuid()}:+{os.getgid()}"
    return f"<seclabel type='static' model='dac' relabel='no'><label>{label}</label></seclabel>"


def qemu_process_identity(connection: Any) -> tuple[int, int] | None:
    """The uid and gid libvirt runs qemu as with its default DAC label (None: no DAC driver)."""
    libvirt = _libvirt()
    try:
        root = ET.fromstring(connection.getCapabilities())
    except libvirt.libvirtError as error:
        raise VirtError(f"cannot read libvirt's capabilities: {_message(error)}") from None
    for model in root.iterfind("host/secmodel"):
        if model.findtext("model") != "dac":
            continue
        for label in model.iterfind("baselabel"):
            if label.get("type") == libvirt_domain_type():
                uid, _, gid = (label.text or "").replace("+", "").partition(":")
                if uid.isdigit() and gid.isdigit():
                    return int(uid), int(gid)
    return None


def domain_xml(spec: DomainSpec) -> str:
    if spec.network not in NETWORK_MODES:
        raise VirtError(f"network {spec.network!r}: use one of {', '.join(NETWORK_MODES)}")
    interface = ""
    qemu_commandline = ""
    if spec.network == "default":
        interface = (
            "<interface type='network'><source network='default'/>"
            "<model type='virtio'/></interface>"
        )
    else:
        # addr 0x10 keeps the NIC clear of the slots libvirt assigns (VGA etc.).
        qemu_commandline = (
            "<qemu:commandline>"
            "<qemu:arg value='-netdev'/>"
            f"<qemu:arg value='user,id=un0,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22'/>"
            "<qemu:arg value='-device'/>"
            "<qemu:arg value='virtio-net-pci,netdev=un0,addr=0x10'/>"
            "</qemu:commandline>"
        )
    return f"""<domain type='{libvirt_domain_type()}' xmlns:qemu='{QEMU_NAMESPACE}'>
  <name>{escape(spec.name)}</name>
  <title>undercloud appliance {escape(spec.metadata.get("build-id", ""))}</title>
  <metadata>{metadata_xml(spec.metadata)}</metadata>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  {_platform_xml()}
  <devices>
    {_disk_and_console_xml(spec.overlay, spec.console_log, False, spec.backing_chain)}
    {interface}
    {spec.provisioning.xml(PROVISIONING_PCI_SLOT) if spec.provisioning else ""}
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>
  {_seclabel_xml(spec.qemu_user)}
  {qemu_commandline}
</domain>
"""


def node_xml(spec: NodeSpec) -> str:
    metadata = metadata_xml({"virtual-node-of": spec.appliance})
    # <os><boot> (not per-device boot order): sushy-tools' libvirt driver
    # rewrites these when Ironic sets a boot device.
    return f"""<domain type='{libvirt_domain_type()}'>
  <name>{escape(spec.name)}</name>
  <title>virtual baremetal node of {escape(spec.appliance)}</title>
  <metadata>{metadata}</metadata>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='network'/><boot dev='hd'/></os>
  {_platform_xml()}
  <devices>
    {_disk_and_console_xml(spec.disk, spec.console_log, append_log=True)}
    {spec.nic.xml()}
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>
  {_seclabel_xml(spec.qemu_user)}
</domain>
"""


def define_node(connection: Any, spec: NodeSpec) -> Any:
    """Define (not start: the appliance's Ironic powers it on through the BMC)."""
    libvirt = _libvirt()
    try:
        return connection.defineXML(node_xml(spec))
    except libvirt.libvirtError as error:
        raise VirtError(f"cannot define virtual node {spec.name!r}: {_message(error)}") from None


def node_metadata_owner(domain: Any) -> str | None:
    """The appliance a virtual node belongs to (None: not one of ours)."""
    values = read_metadata(domain)
    return (values or {}).get("virtual-node-of") or None


def ensure_isolated_network(connection: Any, name: str) -> bool:
    """An isolated libvirt network (no forwarding, no host address); False if libvirt cannot.

    libvirt needs to create a bridge for it: some hosts (containers without
    the right capabilities) cannot, and the caller falls back to UDP links.
    """
    libvirt = _libvirt()
    with contextlib.suppress(libvirt.libvirtError):
        network = connection.networkLookupByName(name)
        if not network.isActive():
            network.create()
        return True
    xml = f"<network><name>{escape(name)}</name><bridge stp='off'/><mtu size='1500'/></network>"
    try:
        network = connection.networkDefineXML(xml)
    except libvirt.libvirtError as error:
        log.info("cannot define libvirt network %s: %s", name, _message(error))
        return False
    try:
        network.create()
    except libvirt.libvirtError as error:
        log.info("cannot start libvirt network %s: %s", name, _message(error))
        with contextlib.suppress(libvirt.libvirtError):
            network.undefine()
        return False
    return True


def remove_network(connection: Any, name: str) -> bool:
    """Stop and undefine a network this tool made; False when there was none."""
    libvirt = _libvirt()
    try:
        network = connection.networkLookupByName(name)
    except libvirt.libvirtError:
        return False
    try:
        if network.isActive():
            network.destroy()
        network.undefine()
    except libvirt.libvirtError as error:
        raise VirtError(f"cannot remove libvirt network {name!r}: {_message(error)}") from None
    return True


def network_gateway(connection: Any, name: str) -> str | None:
    """The host's IPv4 address on a libvirt network (the NAT gateway), if any."""
    libvirt = _libvirt()
    try:
        root = ET.fromstring(connection.networkLookupByName(name).XMLDesc(0))
    except libvirt.libvirtError:
        return None
    ip = root.find("ip")
    return ip.get("address") if ip is not None else None


def lookup(connection: Any, name: str) -> Any | None:
    libvirt = _libvirt()
    try:
        return connection.lookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise VirtError(f"libvirt domain {name!r}: {_message(error)}") from None


def read_metadata(domain: Any) -> dict[str, str] | None:
    """Our import metadata, or None for a domain this tool did not create."""
    libvirt = _libvirt()
    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NAMESPACE, 0)
    except libvirt.libvirtError:
        return None
    element = ET.fromstring(text)
    return {child.tag.split("}")[-1]: child.text or "" for child in element}


def write_metadata(domain: Any, values: dict[str, str]) -> None:
    libvirt = _libvirt()
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if domain.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    # libvirt puts the element into METADATA_NAMESPACE under METADATA_PREFIX itself.
    inner = (
        "<appliance>"
        + "".join(
            f"<{key}>{escape(str(value))}</{key}>"
            for key, value in values.items()
            if value is not None
        )
        + "</appliance>"
    )
    try:
        domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            inner,
            METADATA_PREFIX,
            METADATA_NAMESPACE,
            flags,
        )
    except libvirt.libvirtError as error:
        raise VirtError(
            f"domain {domain.name()}: cannot store metadata: {_message(error)}"
        ) from None


def define_and_start(connection: Any, spec: DomainSpec) -> Any:
    libvirt = _libvirt()
    try:
        domain = connection.defineXML(domain_xml(spec))
    except libvirt.libvirtError as error:
        raise VirtError(f"cannot define domain {spec.name!r}: {_message(error)}") from None
    try:
        domain.create()
    except libvirt.libvirtError as error:
        with contextlib.suppress(libvirt.libvirtError):
            domain.undefine()
        message = _message(error)
        if "Permission denied" in message and spec.qemu_user == QEMU_USER_LIBVIRT:
            message += " (libvirt's qemu user cannot open it; or import with --qemu-user importer)"
        raise VirtError(f"cannot start domain {spec.name!r}: {message}") from None
    return domain


def ensure_running(domain: Any) -> bool:
    """Start the domain if it is shut off; return whether it was started here."""
    libvirt = _libvirt()
    if domain.isActive():
        return False
    try:
        domain.create()
    except libvirt.libvirtError as error:
        raise VirtError(f"cannot start domain {domain.name()!r}: {_message(error)}") from None
    return True


def remove_domain(domain: Any) -> None:
    """Stop (hard) and undefine; a domain already gone is fine."""
    libvirt = _libvirt()
    name = domain.name()
    try:
        if domain.isActive():
            domain.destroy()
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise VirtError(f"cannot stop domain {name!r}: {_message(error)}") from None
    try:
        # Update snapshots live inside the overlay; their metadata goes with the domain.
        domain.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise VirtError(f"cannot undefine domain {name!r}: {_message(error)}") from None


def state_name(domain: Any | None) -> str:
    if domain is None:
        return "absent"
    libvirt = _libvirt()
    state, _reason = domain.state()
    return {
        libvirt.VIR_DOMAIN_RUNNING: "running",
        libvirt.VIR_DOMAIN_BLOCKED: "running",
        libvirt.VIR_DOMAIN_PAUSED: "paused",
        libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
        libvirt.VIR_DOMAIN_SHUTOFF: "shut-off",
        libvirt.VIR_DOMAIN_CRASHED: "crashed",
        libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
    }.get(state, "unknown")


def lease_address(domain: Any) -> str | None:
    """The guest's IPv4 address from libvirt's DHCP leases, if it has one yet."""
    libvirt = _libvirt()
    try:
        interfaces = domain.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
    except libvirt.libvirtError:
        return None
    for interface in (interfaces or {}).values():
        for address in interface.get("addrs") or []:
            if address.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                return address["addr"]
    return None


def check_network_active(connection: Any, name: str = "default") -> None:
    libvirt = _libvirt()
    try:
        network = connection.networkLookupByName(name)
        active = network.isActive()
    except libvirt.libvirtError:
        raise VirtError(
            f"libvirt network {name!r} does not exist: define it, or use --network user"
        ) from None
    if not active:
        raise VirtError(
            f"libvirt network {name!r} is not active: run 'virsh net-start {name}', "
            "or use --network user"
        )


# -- snapshots (taken before online updates and upgrades) -------------------------

# Only snapshots named with this prefix are this tool's; others are left alone.
SNAPSHOT_PREFIX = "pre-"
# Internal snapshots hold the guest's memory too: keep a few, not all.
SNAPSHOTS_KEPT = 3


@dataclass(frozen=True)
class Snapshot:
    """One of this tool's snapshots and the release and puddle the domain had then."""

    name: str
    created: int  # seconds since the epoch, from libvirt
    reason: str | None
    release: str | None
    puddle: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created": self.created,
            "reason": self.reason,
            "release": self.release,
            "puddle": self.puddle,
        }


def take_snapshot(domain: Any, reason: str, release: str | None, puddle: str | None) -> str:
    """An internal snapshot of the running domain (disk and memory, in its qcow2).

    The description carries the release and puddle it holds, so a revert
    (automatic or ``rollback``) can restore the import record too.  Only
    the newest ``SNAPSHOTS_KEPT`` of this tool's snapshots are kept.
    Returns the new snapshot's name.
    """
    libvirt = _libvirt()
    name = f"{SNAPSHOT_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    description = json.dumps({"reason": reason, "release": release, "puddle": puddle})
    xml = (
        f"<domainsnapshot><name>{escape(name)}</name>"
        f"<description>{escape(description)}</description></domainsnapshot>"
    )
    try:
        domain.snapshotCreateXML(xml, 0)
    except libvirt.libvirtError as error:
        raise VirtError(f"cannot snapshot {domain.name()!r}: {_message(error)}") from None
    for old in list_snapshots(domain)[:-SNAPSHOTS_KEPT]:
        _delete_snapshot(domain, old.name)
        log.info("deleted old snapshot %s", old.name)
    return name


def list_snapshots(domain: Any) -> list[Snapshot]:
    """This tool's snapshots of ``domain``, oldest first."""
    libvirt = _libvirt()
    snapshots = []
    try:
        for handle in domain.listAllSnapshots(0):
            root = ET.fromstring(handle.getXMLDesc(0))
            name = root.findtext("name") or handle.getName()
            if not name.startswith(SNAPSHOT_PREFIX):
                continue
            description = _snapshot_description(root.findtext("description") or "")
            snapshots.append(
                Snapshot(
                    name=name,
                    created=int(root.findtext("creationTime") or 0),
                    reason=description.get("reason"),
                    release=description.get("release"),
                    puddle=description.get("puddle"),
                )
            )
    except libvirt.libvirtError as error:
        raise VirtError(f"cannot list snapshots of {domain.name()!r}: {_message(error)}") from None
    return sorted(snapshots, key=lambda s: (s.created, s.name))


def _snapshot_description(text: str) -> dict[str, Any]:
    try:
        description = json.loads(text or "{}")
    except ValueError:
        return {}
    return description if isinstance(description, dict) else {}


def _delete_snapshot(domain: Any, name: str) -> None:
    libvirt = _libvirt()
    try:
        domain.snapshotLookupByName(name, 0).delete(0)
    except libvirt.libvirtError as error:
        raise VirtError(
            f"cannot delete snapshot {name} of {domain.name()!r}: {_message(error)}"
        ) from None


def revert_to_snapshot(domain: Any, name: str) -> None:
    """Revert to ``name`` and leave the domain running (as it was when taken)."""
    libvirt = _libvirt()
    try:
        snapshot = domain.snapshotLookupByName(name, 0)
        domain.revertToSnapshot(snapshot, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING)
    except libvirt.libvirtError as error:
        raise VirtError(
            f"cannot revert {domain.name()!r} to snapshot {name}: {_message(error)}"
        ) from None
