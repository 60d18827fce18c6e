"""The virtual nodes' BMC: a real sushy-tools emulator on 127.0.0.1.

libvirt's ``test:///default`` driver (in-process, one stock domain named
``test``) stands in for the host's libvirtd here: what is tested is our
start/stop, credentials, allow-list and errors around the real emulator.
The end-to-end import tests drive it with real node domains.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests

from importer import virtual_bmc
from tests.support.requirements import skip_or_fail

TEST_URI = "test:///default"
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # libvirt's stock test domain


@pytest.fixture
def libvirt_test_driver() -> None:
    try:
        import libvirt
    except ImportError:
        skip_or_fail("the libvirt Python bindings (python3-libvirt) are missing")
    connection = libvirt.open(TEST_URI)
    assert connection.lookupByName("test").UUIDString() == TEST_DOMAIN_UUID


def start(state_dir: Path, port: int, allowed: list[str]) -> virtual_bmc.BmcEndpoint:
    return virtual_bmc.start(
        state_dir,
        uri=TEST_URI,
        listen_address="127.0.0.1",
        guest_address="10.0.2.2",
        port=port,
        allowed_instances=allowed,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_emulator_serves_only_its_nodes_behind_credentials(
    tmp_path: Path, libvirt_test_driver: None
) -> None:
    port = free_port()
    bmc = start(tmp_path, port, [TEST_DOMAIN_UUID])
    try:
        assert bmc.guest_url == f"http://10.0.2.2:{port}"
        pid = virtual_bmc.running_pid(tmp_path)
        assert pid is not None
        systems = f"{bmc.host_url}/redfish/v1/Systems"
        assert requests.get(systems, timeout=10).status_code == 401
        wrong = requests.get(systems, auth=(bmc.username, "wrong"), timeout=10)
        assert wrong.status_code == 401
        listed = requests.get(systems, auth=(bmc.username, bmc.password), timeout=10)
        listed.raise_for_status()
        members = [member["@odata.id"] for member in listed.json()["Members"]]
        assert members == [f"/redfish/v1/Systems/{TEST_DOMAIN_UUID}"]
        system = requests.get(
            f"{systems}/{TEST_DOMAIN_UUID}", auth=(bmc.username, bmc.password), timeout=10
        )
        assert system.json()["PowerState"] in ("On", "Off")
        # Starting again keeps the running emulator and its password.
        again = start(tmp_path, port, [TEST_DOMAIN_UUID])
        assert again == bmc and virtual_bmc.running_pid(tmp_path) == pid
        assert (tmp_path / "bmc" / "password").stat().st_mode & 0o777 == 0o600
    finally:
        assert virtual_bmc.stop(tmp_path)
    assert virtual_bmc.running_pid(tmp_path) is None
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not virtual_bmc.stop(tmp_path)


NODE_UUID = "11111111-2222-3333-4444-555555555555"
OTHER_UUID = "99999999-8888-7777-6666-555555555555"


def two_domain_host(path: Path) -> str:
    """A libvirt test-driver host with a node and some other domain on it."""
    domains = "".join(
        f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>"
        "<memory>1048576</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"
        for name, uuid in (("node", NODE_UUID), ("other", OTHER_UUID))
    )
    path.write_text(f"<node>{domains}</node>")
    return f"test://{path}"


def test_emulator_denies_domains_that_are_not_its_nodes(
    tmp_path: Path, libvirt_test_driver: None
) -> None:
    bmc = virtual_bmc.start(
        tmp_path,
        uri=two_domain_host(tmp_path / "host.xml"),
        listen_address="127.0.0.1",
        guest_address="10.0.2.2",
        port=free_port(),
        allowed_instances=[NODE_UUID],
    )
    auth = (bmc.username, bmc.password)
    try:
        systems = f"{bmc.host_url}/redfish/v1/Systems"
        listed = requests.get(systems, auth=auth, timeout=10).json()["Members"]
        assert listed == [{"@odata.id": f"/redfish/v1/Systems/{NODE_UUID}"}]
        denied = requests.get(f"{systems}/{OTHER_UUID}", auth=auth, timeout=10)
        # sushy-tools 2.2 means 404 here; its api_utils shadows its own error
        # module, so a denial ends as a 500.  Denied either way: no system data.
        assert denied.status_code in (404, 500)
        assert "PowerState" not in denied.text
        off = requests.post(
            f"{systems}/{OTHER_UUID}/Actions/ComputerSystem.Reset",
            json={"ResetType": "ForceOff"},
            auth=auth,
            timeout=10,
        )
        assert off.status_code >= 400, "a denied domain cannot be powered off"
    finally:
        virtual_bmc.stop(tmp_path)


def test_a_node_the_emulator_cannot_read_is_one_clear_error(
    tmp_path: Path, libvirt_test_driver: None
) -> None:
    port = free_port()
    with pytest.raises(virtual_bmc.BmcError) as raised:
        start(tmp_path, port, [OTHER_UUID])
    assert str(raised.value).startswith(
        f"BMC emulator on http://127.0.0.1:{port} cannot read system {OTHER_UUID}: HTTPError"
    )
    assert virtual_bmc.running_pid(tmp_path) is None, "nothing left running"


def test_port_in_use_is_one_clear_error_and_nothing_runs(
    tmp_path: Path, libvirt_test_driver: None
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(virtual_bmc.BmcError) as raised:
            start(tmp_path, port, [TEST_DOMAIN_UUID])
    assert str(raised.value) == (f"BMC port {port} on 127.0.0.1 is in use: pass another --bmc-port")
    assert virtual_bmc.running_pid(tmp_path) is None
