"""Virtual baremetal nodes for an imported appliance, and the nodes file that enrolls them.

``import --nodes N`` gives the appliance a provisioning NIC (its eth1) and N
libvirt domains with an empty disk that boot from the network, powered off,
on a link shared only with that NIC:

- ``network``: an isolated libvirt network (``<appliance>-prov``: no
  forwarding, no host address), for any number of nodes;
- ``udp``: a qemu UDP socket netdev pair on 127.0.0.1 (one cable, one node),
  where libvirt cannot make a bridge.  ``auto`` tries the network first.

Ironic in the appliance reaches the nodes' power and boot device through
one sushy-tools Redfish emulator on the host (importer.virtual_bmc).  The
nodes file (``nodes.yaml``, the format ``openstack baremetal create``
reads) names each node, its redfish driver_info and its MAC.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from importer import libvirt_domain
from importer.virtual_bmc import BmcEndpoint
from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.manifest import write_file_atomically

log = logging.getLogger(__name__)

NODES_DIR_NAME = "nodes"
NODES_PLAN_NAME = "nodes.json"
NODES_FILE_NAME = "nodes.yaml"
LINK_KINDS = ("auto", "network", "udp")
NODE_MEMORY_MIB = 2048
NODE_VCPUS = 1
NODE_DISK_GIB = 10
# What the host keeps for itself when checking that the guests fit.
HOST_RESERVE_MIB = 1024


class NodesError(ApplianceError):
    """Virtual nodes cannot be made as asked."""


@dataclass(frozen=True)
class NodesPlan:
    """What ``import --nodes`` made; kept in ``<state dir>/nodes/nodes.json``."""

    appliance: str
    link: str  # "network" or "udp"
    network: str | None
    appliance_mac: str
    node_names: list[str]
    node_macs: list[str]
    udp_ports: list[int]  # [appliance's, node's] for "udp"
    bmc_port: int
    # Each node's fixed address on the provisioning network (the appliance's
    # dnsmasq hands it out by MAC), so ssh.config and hosts can name it.
    node_addresses: list[str] = field(default_factory=list)
    # Where Ironic in the appliance finds the deploy ramdisk baked into it
    # (manifest ``ironic_images``): None when the appliance has none.
    deploy_ramdisk: dict[str, str] | None = None

    @property
    def count(self) -> int:
        return len(self.node_names)

    def appliance_nic(self) -> libvirt_domain.ProvisioningNic:
        if self.link == "network":
            return libvirt_domain.ProvisioningNic(self.appliance_mac, network=self.network)
        appliance_port, node_port = self.udp_ports
        return libvirt_domain.ProvisioningNic(
            self.appliance_mac, local_port=appliance_port, remote_port=node_port
        )

    def node_nic(self, index: int) -> libvirt_domain.ProvisioningNic:
        if self.link == "network":
            return libvirt_domain.ProvisioningNic(self.node_macs[index], network=self.network)
        appliance_port, node_port = self.udp_ports
        return libvirt_domain.ProvisioningNic(
            self.node_macs[index], local_port=node_port, remote_port=appliance_port
        )


def nodes_dir(state_dir: Path) -> Path:
    return state_dir / NODES_DIR_NAME


def read_plan(state_dir: Path) -> NodesPlan | None:
    try:
        return NodesPlan(**json.loads((nodes_dir(state_dir) / NODES_PLAN_NAME).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        raise NodesError(f"{nodes_dir(state_dir) / NODES_PLAN_NAME}: unreadable: {error}") from None


def write_plan(state_dir: Path, plan: NodesPlan) -> None:
    nodes_dir(state_dir).mkdir(parents=True, exist_ok=True)
    write_file_atomically(
        nodes_dir(state_dir) / NODES_PLAN_NAME, json.dumps(asdict(plan), indent=2).encode()
    )


def mac_for(name: str) -> str:
    """A stable locally administered MAC (qemu's 52:54:00 prefix) from a name."""
    digest = hashlib.sha256(name.encode()).digest()
    return "52:54:00:{:02x}:{:02x}:{:02x}".format(*digest[:3])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_memory(appliance_mib: int, count: int) -> None:
    """Refuse before anything is made when the appliance and its nodes cannot fit."""
    wanted = appliance_mib + count * NODE_MEMORY_MIB
    available = _available_mib()
    if available is not None and wanted + HOST_RESERVE_MIB > available:
        raise NodesError(
            f"--nodes {count}: the appliance ({appliance_mib} MiB) and {count} node(s) "
            f"({NODE_MEMORY_MIB} MiB each) need {wanted} MiB; this host has {available} MiB "
            f"available (keeping {HOST_RESERVE_MIB} MiB for itself)"
        )


def _available_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def node_addresses(provisioning: Mapping[str, Any], count: int) -> list[str]:
    """The first ``count`` addresses of the profile's DHCP range, one per node."""
    start = ipaddress.IPv4Address(provisioning["dhcp_start"])
    end = ipaddress.IPv4Address(provisioning["dhcp_end"])
    if int(end) - int(start) + 1 < count:
        raise NodesError(
            f"--nodes {count}: the appliance's provisioning DHCP range {start}-{end} "
            f"holds only {int(end) - int(start) + 1} address(es)"
        )
    return [str(start + index) for index in range(count)]


def deploy_ramdisk_of(ironic_images: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Node ``deploy_kernel``/``deploy_ramdisk`` (file:// in the appliance), from the manifest."""
    if not ironic_images:
        return None
    directory = ironic_images["directory"]
    by_suffix = {name.rsplit(".", 1)[-1]: name for name in ironic_images["files"]}
    if "kernel" not in by_suffix or "initramfs" not in by_suffix:
        return None
    return {
        "deploy_kernel": f"file://{directory}/{by_suffix['kernel']}",
        "deploy_ramdisk": f"file://{directory}/{by_suffix['initramfs']}",
    }


def plan_nodes(
    connection: Any,
    appliance: str,
    count: int,
    link: str,
    bmc_port: int,
    *,
    provisioning: Mapping[str, Any],
    ironic_images: Mapping[str, Any] | None = None,
) -> NodesPlan:
    """Choose the link (making the isolated network when it is used) and names, MACs, ports."""
    if link not in LINK_KINDS:
        raise NodesError(f"--provisioning-link {link!r}: use one of {', '.join(LINK_KINDS)}")
    network_name = f"{appliance}-prov"
    chosen = link
    if link in ("auto", "network"):
        if libvirt_domain.ensure_isolated_network(connection, network_name):
            chosen = "network"
        elif link == "network":
            raise NodesError(
                f"libvirt cannot create the isolated network {network_name!r} on this host "
                "(no bridges?): use --provisioning-link udp (one node)"
            )
        else:
            chosen = "udp"
            log.info("no libvirt bridge on this host: the node gets a UDP link")
    if chosen == "udp" and count != 1:
        raise NodesError(
            f"--nodes {count}: a UDP provisioning link joins the appliance to one node; "
            "more need a libvirt network (bridges), which this host cannot make"
            if link == "auto"
            else f"--nodes {count}: --provisioning-link udp joins the appliance to one node"
        )
    addresses = node_addresses(provisioning, count)
    names = [node_name(appliance, index) for index in range(1, count + 1)]
    return NodesPlan(
        appliance=appliance,
        link=chosen,
        network=network_name if chosen == "network" else None,
        appliance_mac=mac_for(f"{appliance}/provisioning"),
        node_names=names,
        node_macs=[mac_for(name) for name in names],
        udp_ports=[free_udp_port(), free_udp_port()] if chosen == "udp" else [],
        bmc_port=bmc_port,
        node_addresses=addresses,
        deploy_ramdisk=deploy_ramdisk_of(ironic_images),
    )


def define_nodes(
    connection: Any,
    state_dir: Path,
    plan: NodesPlan,
    qemu_user: str = libvirt_domain.QEMU_USER_LIBVIRT,
) -> list[str]:
    """Define every node domain (disks made here), powered off; return their UUIDs."""
    directory = nodes_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    uuids = []
    for index, name in enumerate(plan.node_names):
        existing = libvirt_domain.lookup(connection, name)
        if existing is not None:
            if libvirt_domain.node_metadata_owner(existing) != plan.appliance:
                raise NodesError(
                    f"libvirt domain {name!r} exists and is not a node of {plan.appliance!r}: "
                    "remove it or choose another --name"
                )
            uuids.append(existing.UUIDString())
            continue
        disk = directory / f"{name}.qcow2"
        if not disk.exists():
            _empty_disk(disk)
        domain = libvirt_domain.define_node(
            connection,
            libvirt_domain.NodeSpec(
                name=name,
                disk=disk,
                memory_mib=NODE_MEMORY_MIB,
                vcpus=NODE_VCPUS,
                nic=plan.node_nic(index),
                console_log=directory / f"{name}.console.log",
                appliance=plan.appliance,
                qemu_user=qemu_user,
            ),
        )
        uuids.append(domain.UUIDString())
    return uuids


def _empty_disk(path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(temporary), f"{NODE_DISK_GIB}G"],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as error:
        temporary.unlink(missing_ok=True)
        raise NodesError(f"cannot create node disk {path}: {error.stderr.strip()}") from None
    os.replace(temporary, path)


def nodes_document(plan: NodesPlan, uuids: list[str], bmc: BmcEndpoint) -> dict[str, Any]:
    """What ``openstack baremetal create nodes.yaml`` enrolls."""
    nodes = []
    for name, uuid, mac in zip(plan.node_names, uuids, plan.node_macs, strict=True):
        node: dict[str, Any] = {
            "name": name,
            "driver": "redfish",
            "driver_info": {
                "redfish_address": bmc.guest_url,
                "redfish_system_id": f"/redfish/v1/Systems/{uuid}",
                "redfish_username": bmc.username,
                "redfish_password": bmc.password,
            },
            "resource_class": "baremetal",
            # CPUs, memory and disk are what inspection finds out.
            # Legacy BIOS: the nodes have no UEFI firmware (no OVMF needed on the host).
            "properties": {"cpu_arch": "x86_64", "capabilities": "boot_mode:bios"},
            "ports": [{"address": mac}],
        }
        if plan.deploy_ramdisk:
            node["driver_info"].update(plan.deploy_ramdisk)
            # iPXE over HTTP from the appliance, the agent writes the image
            # (direct), ironic-inspector records the hardware.
            node.update(
                boot_interface="ipxe", deploy_interface="direct", inspect_interface="inspector"
            )
        nodes.append(node)
    return {"nodes": nodes}


def dhcp_hosts_text(plan: NodesPlan) -> str:
    """dnsmasq ``dhcp-hostsfile`` lines: each node's MAC gets its fixed address and name."""
    return "".join(
        f"{mac},{address},{name}\n"
        for name, mac, address in zip(
            plan.node_names, plan.node_macs, plan.node_addresses, strict=True
        )
    )


def node_name(appliance: str, index: int) -> str:
    """The libvirt domain (and Ironic node) name of an appliance's ``index``-th node."""
    return f"{appliance}-node-{index}"


def is_nodes_file_of(text: str, appliance: str) -> bool:
    """Whether ``text`` is a nodes file listing only ``appliance``'s virtual nodes."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    nodes = document.get("nodes") if isinstance(document, dict) else None
    if not isinstance(nodes, list) or not nodes:
        return False
    names = {node_name(appliance, index) for index in range(1, len(nodes) + 1)}
    return all(isinstance(node, dict) and node.get("name") in names for node in nodes)


def nodes_file_text(document: dict[str, Any]) -> str:
    header = (
        "# Virtual baremetal nodes of this appliance, written by undercloud-appliance import.\n"
        "# Enroll them in the appliance with: openstack baremetal create nodes.yaml\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False)


def remove_nodes(connection: Any, state_dir: Path, plan: NodesPlan) -> list[str]:
    """Remove the node domains, their disks and the network; return what was removed."""
    removed = []
    for name in plan.node_names:
        domain = libvirt_domain.lookup(connection, name)
        if domain is not None and libvirt_domain.node_metadata_owner(domain) == plan.appliance:
            libvirt_domain.remove_domain(domain)
            removed.append(f"virtual node {name}")
    if plan.network and libvirt_domain.remove_network(connection, plan.network):
        removed.append(f"libvirt network {plan.network}")
    return removed


def node_states(connection: Any, plan: NodesPlan) -> list[dict[str, str]]:
    return [
        {
            "name": name,
            "mac": mac,
            "state": libvirt_domain.state_name(libvirt_domain.lookup(connection, name)),
        }
        for name, mac in zip(plan.node_names, plan.node_macs, strict=True)
    ]
