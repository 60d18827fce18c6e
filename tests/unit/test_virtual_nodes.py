"""Virtual baremetal nodes: their domain XML, the provisioning link, the nodes file."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from importer import libvirt_domain, virtual_nodes
from importer.virtual_bmc import BmcEndpoint
from undercloud_appliance.errors import ApplianceError


def udp_plan() -> virtual_nodes.NodesPlan:
    return virtual_nodes.NodesPlan(
        appliance="uc",
        link="udp",
        network=None,
        appliance_mac=virtual_nodes.mac_for("uc/provisioning"),
        node_names=["uc-node-1"],
        node_macs=[virtual_nodes.mac_for("uc-node-1")],
        udp_ports=[41001, 41002],
        bmc_port=8000,
        node_addresses=["192.168.24.100"],
    )


PROVISIONING = {"dhcp_start": "192.168.24.100", "dhcp_end": "192.168.24.101"}
IRONIC_IMAGES = {
    "directory": "/srv/ironic/images",
    "files": {
        "ipa.kernel": {"kind": "ramdisk"},
        "ipa.initramfs": {"kind": "ramdisk"},
        "deploy-image.qcow2": {"kind": "deploy-image"},
    },
}


def test_udp_link_crosses_the_two_ends_on_loopback() -> None:
    plan = udp_plan()
    appliance = ET.fromstring(plan.appliance_nic().xml(libvirt_domain.PROVISIONING_PCI_SLOT))
    node = ET.fromstring(plan.node_nic(0).xml())
    assert appliance.get("type") == node.get("type") == "udp"
    # The appliance sends to the node's local port and the node to the appliance's.
    assert appliance.find("source").get("port") == node.find("source/local").get("port")
    assert node.find("source").get("port") == appliance.find("source/local").get("port")
    for end in (appliance, node):
        assert end.find("source").get("address") == "127.0.0.1"
        assert end.find("source/local").get("address") == "127.0.0.1"
    assert appliance.find("address").get("slot") == "0x11"
    assert node.find("mac").get("address") == plan.node_macs[0]


def test_network_link_puts_both_ends_on_the_isolated_network() -> None:
    plan = virtual_nodes.NodesPlan(
        **{**udp_plan().__dict__, "link": "network", "network": "uc-prov", "udp_ports": []}
    )
    for nic in (plan.appliance_nic(), plan.node_nic(0)):
        element = ET.fromstring(nic.xml())
        assert element.get("type") == "network"
        assert element.find("source").get("network") == "uc-prov"


def test_node_domain_boots_from_the_network_first_with_an_empty_disk(tmp_path: Path) -> None:
    plan = udp_plan()
    root = ET.fromstring(
        libvirt_domain.node_xml(
            libvirt_domain.NodeSpec(
                name="uc-node-1",
                disk=tmp_path / "uc-node-1.qcow2",
                memory_mib=2048,
                vcpus=1,
                nic=plan.node_nic(0),
                console_log=tmp_path / "console.log",
                appliance="uc",
            )
        )
    )
    assert [boot.get("dev") for boot in root.findall("os/boot")] == ["network", "hd"]
    assert root.find("devices/disk/source").get("file") == str(tmp_path / "uc-node-1.qcow2")
    (metadata,) = list(root.find("metadata"))
    assert {child.tag.split("}")[-1]: child.text for child in metadata} == {"virtual-node-of": "uc"}


def test_appliance_gets_its_provisioning_nic_after_its_first_one(tmp_path: Path) -> None:
    spec = libvirt_domain.DomainSpec(
        name="uc",
        overlay=tmp_path / "overlay.qcow2",
        memory_mib=4096,
        vcpus=2,
        network="user",
        ssh_port=40022,
        console_log=tmp_path / "console.log",
        metadata={},
        provisioning=udp_plan().appliance_nic(),
    )
    root = ET.fromstring(libvirt_domain.domain_xml(spec))
    (interface,) = root.findall("devices/interface")
    # User networking's NIC sits at 0x10; eth1 must sort after it.
    assert int(interface.find("address").get("slot"), 16) > 0x10


def test_macs_are_stable_local_and_distinct() -> None:
    assert virtual_nodes.mac_for("a-node-1") == virtual_nodes.mac_for("a-node-1")
    assert virtual_nodes.mac_for("a-node-1") != virtual_nodes.mac_for("a-node-2")
    assert virtual_nodes.mac_for("x").startswith("52:54:00:")


def test_nodes_file_is_what_openstack_baremetal_create_reads() -> None:
    bmc = BmcEndpoint("127.0.0.1", 8000, "10.0.2.2", "admin", "s3cret")
    document = virtual_nodes.nodes_document(udp_plan(), ["0f0e-uuid"], bmc)
    text = virtual_nodes.nodes_file_text(document)
    (node,) = yaml.safe_load(text)["nodes"]
    assert node["name"] == "uc-node-1"
    assert node["driver"] == "redfish"
    assert node["driver_info"] == {
        "redfish_address": "http://10.0.2.2:8000",
        "redfish_system_id": "/redfish/v1/Systems/0f0e-uuid",
        "redfish_username": "admin",
        "redfish_password": "s3cret",
    }
    assert node["ports"] == [{"address": udp_plan().node_macs[0]}]
    # Inspection finds CPUs, memory and disk; the file does not guess them.
    assert node["properties"] == {"cpu_arch": "x86_64", "capabilities": "boot_mode:bios"}
    assert "deploy_interface" not in node, "no ramdisk in the appliance: nothing to deploy with"


def test_nodes_file_names_the_baked_ramdisk_and_the_interfaces_that_deploy() -> None:
    bmc = BmcEndpoint("127.0.0.1", 8000, "10.0.2.2", "admin", "s3cret")
    plan = virtual_nodes.NodesPlan(
        **{**udp_plan().__dict__, "deploy_ramdisk": virtual_nodes.deploy_ramdisk_of(IRONIC_IMAGES)}
    )
    (node,) = virtual_nodes.nodes_document(plan, ["0f0e-uuid"], bmc)["nodes"]
    assert node["driver_info"]["deploy_kernel"] == "file:///srv/ironic/images/ipa.kernel"
    assert node["driver_info"]["deploy_ramdisk"] == "file:///srv/ironic/images/ipa.initramfs"
    assert (node["boot_interface"], node["deploy_interface"], node["inspect_interface"]) == (
        "ipxe",
        "direct",
        "inspector",
    )
    assert virtual_nodes.deploy_ramdisk_of(None) is None


def test_nodes_get_fixed_addresses_from_the_start_of_the_dhcp_range() -> None:
    assert virtual_nodes.node_addresses(PROVISIONING, 2) == ["192.168.24.100", "192.168.24.101"]
    with pytest.raises(
        ApplianceError, match=r"--nodes 3: .*192.168.24.100-192.168.24.101 holds only 2"
    ):
        virtual_nodes.node_addresses(PROVISIONING, 3)
    assert virtual_nodes.dhcp_hosts_text(udp_plan()) == (
        f"{udp_plan().node_macs[0]},192.168.24.100,uc-node-1\n"
    )


def test_too_many_nodes_for_the_memory_is_refused_before_anything_is_made() -> None:
    with pytest.raises(ApplianceError, match=r"--nodes 100000: .* need .* MiB; this host has"):
        virtual_nodes.check_memory(8192, 100000)
    virtual_nodes.check_memory(256, 0)


def test_udp_link_carries_one_node_only() -> None:
    class NoBridges:
        def networkLookupByName(self, name):
            raise AssertionError("udp must not look for a network")

    with pytest.raises(ApplianceError, match="--provisioning-link udp joins the appliance to one"):
        virtual_nodes.plan_nodes(NoBridges(), "uc", 2, "udp", 8000, provisioning=PROVISIONING)
    with pytest.raises(ApplianceError, match="--provisioning-link 'wire'"):
        virtual_nodes.plan_nodes(NoBridges(), "uc", 1, "wire", 8000, provisioning=PROVISIONING)
    plan = virtual_nodes.plan_nodes(
        NoBridges(), "uc", 1, "udp", 8000, provisioning=PROVISIONING, ironic_images=IRONIC_IMAGES
    )
    assert plan.link == "udp" and len(set(plan.udp_ports)) == 2
    assert plan.node_addresses == ["192.168.24.100"]
    assert plan.deploy_ramdisk["deploy_kernel"].endswith("/ipa.kernel")


def test_a_nodes_file_is_recognised_only_when_it_lists_only_that_appliances_nodes() -> None:
    ours = "nodes:\n- name: uc-node-1\n- name: uc-node-2\n"
    assert virtual_nodes.is_nodes_file_of(ours, "uc")
    assert not virtual_nodes.is_nodes_file_of(ours, "other")
    assert not virtual_nodes.is_nodes_file_of("nodes:\n- name: uc-node-1\n- name: rack-7\n", "uc")
    assert not virtual_nodes.is_nodes_file_of("nodes: []\n", "uc")
    assert not virtual_nodes.is_nodes_file_of("nodes: [unclosed\n", "uc")
    assert not virtual_nodes.is_nodes_file_of("just text", "uc")
