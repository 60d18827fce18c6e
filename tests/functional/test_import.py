"""End to end: build -> store on nginx -> import under libvirtd -> ssh -> replace -> destroy.

Uses the session's real ``debian-ci`` build (``appliance_build``), lays it
out as a store (tests/support/store_tree.py, the documented layout), serves
it with nginx on 127.0.0.1 and imports it under a real libvirtd started
here when none runs.  Networking: libvirt's ``default`` NAT network when it
can be started, else qemu user networking (``UNDERCLOUD_APPLIANCE_TEST_NETWORK``
forces one).  The guest boots under TCG when KVM is not usable: minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from importer import libvirt_domain, virtual_nodes
from tests.conftest import appliance_name_for_test, run_cli
from tests.support.appliance_ssh import ssh_output
from tests.support.libvirtd import active_default_network, running_libvirtd
from tests.support.nginx import NginxServer
from tests.support.store_tree import lay_out_build

pytestmark = pytest.mark.slow

IMPORT_TIMEOUT = 20 * 60
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
GIB = 1024**3


@pytest.fixture(scope="module")
def libvirt_network() -> Iterator[tuple[str, str]]:
    """(libvirt URI, network mode) with libvirtd running for the module."""
    wanted = os.environ.get("UNDERCLOUD_APPLIANCE_TEST_NETWORK", "default")
    with ExitStack() as stack:
        uri = stack.enter_context(running_libvirtd())
        mode = "user"
        if wanted == "default" and stack.enter_context(active_default_network(uri)):
            mode = "default"
        yield uri, mode


# Run in the appliance: a Redfish call to the node's BMC, as Ironic's redfish driver makes it.
REDFISH_CALL = """
import base64, json, sys, urllib.request
import yaml
node = yaml.safe_load(open(sys.argv[1]))["nodes"][0]
info = node["driver_info"]
url = info["redfish_address"] + info["redfish_system_id"] + sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
auth = f'{info["redfish_username"]}:{info["redfish_password"]}'.encode()
request.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
request.add_header("Content-Type", "application/json")
with urllib.request.urlopen(request, timeout=300) as response:
    text = response.read().decode()
print(json.loads(text)["PowerState"] if text.strip() else response.status)
"""


def check_virtual_node(
    workdir: Path, name: str, uri: str, env: dict[str, str], manifest: dict
) -> str:
    """The node, its BMC and its link, seen from the appliance; returns the node's name."""
    nodes = yaml.safe_load((workdir / "nodes.yaml").read_text())["nodes"]
    assert [node["name"] for node in nodes] == [f"{name}-node-1"]
    node = nodes[0]
    in_appliance = yaml.safe_load(ssh_output(workdir, name, "cat nodes.yaml"))
    assert in_appliance == {"nodes": nodes}, "the appliance has the same nodes file"

    status = json.loads(run_cli("status", name, "--json", "--connect", uri, env=env).stdout)
    assert status["nodes"] == [
        {"name": node["name"], "mac": node["ports"][0]["address"], "state": "shut-off"}
    ]
    assert status["bmc"]["running"] is True

    # The provisioning NIC is eth1 with the profile's address.
    provisioning = manifest["profile"]["resolved"]["provisioning"]
    eth1 = ssh_output(workdir, name, "ip -4 -o addr show dev eth1")
    assert f"inet {provisioning['address']}" in eth1, eth1

    ssh_output(workdir, name, f"cat > redfish-call.py <<'EOF'\n{REDFISH_CALL}\nEOF")
    call = "python3 redfish-call.py nodes.yaml"
    assert ssh_output(workdir, name, f"{call} ''").strip() == "Off"
    received = int(ssh_output(workdir, name, "cat /sys/class/net/eth1/statistics/rx_packets"))
    reset = '/Actions/ComputerSystem.Reset \'{"ResetType": "On"}\''
    ssh_output(workdir, name, f"{call} {reset}")
    assert ssh_output(workdir, name, f"{call} ''").strip() == "On"
    domain = libvirt_domain.lookup(libvirt_domain.connect(uri), node["name"])
    assert libvirt_domain.state_name(domain) == "running"

    # The node network-boots: its firmware's DHCP requests reach the appliance's eth1.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        now = int(ssh_output(workdir, name, "cat /sys/class/net/eth1/statistics/rx_packets"))
        if now > received:
            break
        time.sleep(5)
    else:
        raise AssertionError("nothing from the node reached the appliance's eth1 in 180 s")
    return node["name"]


def check_host_keys_are_pinned(workdir: Path, name: str, state_dir: Path) -> list[str]:
    """The guest's host keys are the ones the importer made and pinned; no other is accepted.

    Returns the pinned keys (``algorithm base64``).
    """
    made = sorted(
        " ".join(path.read_text().split()[:2]) for path in (state_dir / "host-keys").glob("*.pub")
    )
    assert len(made) == 3, made
    # The keys sshd serves (its HostKey files; DIB's runtime-ssh-host-keys
    # may leave an unused DSA key beside them).
    in_guest = ssh_output(
        workdir,
        name,
        'sudo sshd -T | awk \'$1 == "hostkey" {print $2 ".pub"}\' | xargs sudo cat',
    ).splitlines()
    assert sorted(" ".join(line.split()[:2]) for line in in_guest) == made

    options = ssh_options(workdir, name)
    assert options["stricthostkeychecking"] == "true", "never trust a host key on first use"
    assert options["userknownhostsfile"] == str(state_dir / "known_hosts")
    port = int(options["port"])
    pattern = options["hostname"] if port == 22 else f"[{options['hostname']}]:{port}"
    known = (state_dir / "known_hosts").read_text().splitlines()
    assert sorted(line.split(" ", 1)[1] for line in known) == made
    assert all(line.split(" ", 1)[0] == pattern for line in known), known

    def ssh_with(known_hosts: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-F", "ssh.config", "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={known_hosts}", name, "true"],
            cwd=workdir, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    unknown = ssh_with("/dev/null")
    assert unknown.returncode != 0 and "Host key verification failed" in unknown.stderr, (
        "an unknown host key is refused, not learnt"
    )
    other_key = workdir / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    wrong = workdir / "wrong_known_hosts"
    algorithm, key = (workdir / "other_host_key.pub").read_text().split()[:2]
    wrong.write_text(f"{pattern} {algorithm} {key}\n")
    mismatch = ssh_with(str(wrong))
    assert mismatch.returncode != 0 and "Host key verification failed" in mismatch.stderr, (
        "a host key that is not the pinned one is refused"
    )
    for leftover in (other_key, other_key.with_suffix(".pub"), wrong):
        leftover.unlink()
    return made


def ssh_options(workdir: Path, name: str) -> dict[str, str]:
    """What OpenSSH makes of ``ssh -F ssh.config NAME`` (``ssh -G``)."""
    effective = subprocess.run(
        ["ssh", "-F", "ssh.config", "-G", name],
        cwd=workdir, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(line.split(" ", 1) for line in effective.splitlines() if " " in line)


def check_qemu_is_unprivileged(uri: str, name: str, cached_image: Path, layer: Path) -> None:
    """qemu runs as libvirt's qemu user, and libvirt left the shared cache's owner alone."""
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
    process = os.stat(f"/proc/{pid}")
    print(f"qemu runs as uid {process.st_uid}, gid {process.st_gid}")
    assert process.st_uid != 0, "qemu must not run as root"
    identity = libvirt_domain.qemu_process_identity(libvirt_domain.connect(uri))
    assert (process.st_uid, process.st_gid) == identity
    for backing in (cached_image, layer):
        assert backing.stat().st_uid == os.getuid(), f"{backing} was chowned"
        assert backing.stat().st_mode & 0o222 == 0
    assert layer.stat().st_mode & 0o007 == 0, "the layer holds private host keys"


# Run in the appliance as the appliance user, the README's "After import: deploy
# a node" commands; {node} is the node's name.
DEPLOY_COMMANDS = {
    "enroll": "openstack baremetal create nodes.yaml",
    "manage": "openstack baremetal node manage --wait 900 {node}",
    "inspect": "openstack baremetal node inspect --wait 1800 {node}",
    "provide (cleaning)": "openstack baremetal node provide --wait 1800 {node}",
    "deploy": "undercloud-deploy-node --wait 2400 {node}",
    "undeploy": "openstack baremetal node undeploy --wait 1800 {node}",
    "delete": "openstack baremetal node delete {node}",
}


def in_appliance(workdir: Path, name: str, command: str, timeout: float = 300) -> str:
    return ssh_output(workdir, name, f"export OS_CLOUD=undercloud; {command}", timeout=timeout)


def deploy_node_end_to_end(workdir: Path, name: str, node: dict) -> dict[str, float]:
    """Enroll, manage, inspect, provide, deploy, ssh, undeploy, delete; seconds per phase."""
    timings: dict[str, float] = {}

    def phase(label: str, timeout: float = 2500) -> str:
        started = time.monotonic()
        output = in_appliance(workdir, name, DEPLOY_COMMANDS[label].format(node=node["name"]),
                              timeout=timeout)  # fmt: skip
        timings[label] = round(time.monotonic() - started, 1)
        print(f"deploy walk-through: {label}: {timings[label]} s", flush=True)
        return output

    phase("enroll")
    phase("manage")
    phase("inspect")
    shown = json.loads(
        in_appliance(workdir, name, f"openstack baremetal node show {node['name']} -f json")
    )
    assert shown["provision_state"] == "manageable", shown["last_error"]
    # What the inspector found: the node's CPUs, memory and disk, and its MAC as a port.
    properties = shown["properties"]
    print(f"inspected properties: {properties}")
    assert int(properties["cpus"]) == virtual_nodes.NODE_VCPUS
    assert int(properties["memory_mb"]) == virtual_nodes.NODE_MEMORY_MIB
    assert int(properties["local_gb"]) in (
        virtual_nodes.NODE_DISK_GIB - 1,
        virtual_nodes.NODE_DISK_GIB,
    )
    data = json.loads(in_appliance(workdir, name, f"undercloud-introspection-data {node['name']}"))
    inventory = data["inventory"]
    mac = node["ports"][0]["address"]
    assert mac in [interface["mac_address"] for interface in inventory["interfaces"]]
    assert [disk["size"] for disk in inventory["disks"]] == [virtual_nodes.NODE_DISK_GIB * GIB]
    assert int(inventory["cpu"]["count"]) == virtual_nodes.NODE_VCPUS

    phase("provide (cleaning)")
    phase("deploy")
    # Through the appliance (ProxyJump in ssh.config), with the key the config drive carried.
    started = time.monotonic()
    deadline = started + 900
    while True:
        reached = subprocess.run(
            ["ssh", "-F", "ssh.config", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
             node["name"], "cat", "/etc/os-release"],
            cwd=workdir, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if reached.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(10)
    assert reached.returncode == 0, f"no ssh to the deployed node: {reached.stderr[-1000:]}"
    timings["ssh after active"] = round(time.monotonic() - started, 1)
    assert "ID=debian" in reached.stdout, reached.stdout
    print(f"deployed node's os-release: {reached.stdout.splitlines()[0]}")
    # Cleaning ran at provide; after undeploy it would boot the ramdisk once
    # more (minutes under TCG) for the same metadata erase: CI skips that one.
    in_appliance(workdir, name, f"openstack baremetal node set --no-automated-clean {node['name']}")
    phase("undeploy")
    phase("delete")
    return timings


# Run as root in an appliance (script on standard input: no secret on a
# command line).  Its own admin password and a token for it; with OLD (an
# earlier appliance's password and token), what this Keystone makes of them.
KEYSTONE_IDENTITY_PROBE = """
import json, time, urllib.error, urllib.request
URL = "http://127.0.0.1:5000/v3/auth/tokens"

def call(headers, body=None):
    request = urllib.request.Request(
        URL, data=body and json.dumps(body).encode(), method="POST" if body else "GET",
        headers={"Content-Type": "application/json", **headers})
    deadline = time.monotonic() + 600
    while True:  # after --skip-smoke Keystone may still be starting
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.headers.get("X-Subject-Token")
        except urllib.error.HTTPError as error:
            return error.code, None
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(3)

def token(password):
    user = {"name": "admin", "domain": {"id": "default"}, "password": password}
    scope = {"project": {"name": "admin", "domain": {"id": "default"}}}
    return call({}, {"auth": {"identity": {"methods": ["password"],
                                           "password": {"user": user}}, "scope": scope}})

own = open("/etc/undercloud-appliance/admin-password").read().strip()
status, own_token = token(own)
assert status == 201, status
import glob
command_lines = []
for path in glob.glob("/proc/[0-9]*/cmdline"):
    try:
        command_lines.append(open(path, "rb").read().decode(errors="replace"))
    except OSError:  # the process ended meanwhile
        pass
report = {"password": own, "token": own_token,
          "clouds_yaml": own in open("/home/stack/.config/openstack/clouds.yaml").read(),
          "on_a_command_line": any(own in line for line in command_lines)}
if OLD:
    report["old_password_status"] = token(OLD["password"])[0]
    report["old_token_status"] = call(
        {"X-Auth-Token": own_token, "X-Subject-Token": OLD["token"]})[0]
print(json.dumps(report))
"""


def keystone_identity(workdir: Path, name: str, old: dict | None = None) -> dict:
    """KEYSTONE_IDENTITY_PROBE's report from appliance ``name``."""
    script = f"OLD = {old!r}\n{KEYSTONE_IDENTITY_PROBE}"  # a Python literal
    return json.loads(ssh_output(workdir, name, "sudo python3 -", stdin=script, timeout=900))


def test_import_ssh_status_reimport_replace_destroy(
    appliance_build: Path, libvirt_network: tuple[str, str], tmp_path: Path
) -> None:
    uri, network = libvirt_network
    manifest = json.loads((appliance_build / "manifest.json").read_text())
    release, build_id = lay_out_build(tmp_path / "store", appliance_build)
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {
        **os.environ,
        "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache"),
        "UNDERCLOUD_APPLIANCE_STATE": str(tmp_path / "state"),
    }
    disk_gib = manifest["image"]["virtual_size"] // GIB + 2
    name = appliance_name_for_test("import")
    assert libvirt_domain.lookup(libvirt_domain.connect(uri), name) is None, (
        f"a domain named {name!r} already exists on this host"
    )

    with NginxServer(tmp_path / "store") as nginx:
        common = [
            nginx.url,
            "--name",
            name,
            "--release",
            release,
            "--connect",
            uri,
            "--network",
            network,
            # Keystone, Ironic and ironic-inspector; with the node: 4 + 2 GiB.
            "--memory",
            "4096",
            "--vcpus",
            "2",
        ]
        try:
            # With a virtual baremetal node behind a BMC emulator, deployed for real below.
            imported = run_cli(
                "import",
                *common,
                "--disk-size",
                str(disk_gib),
                "--nodes",
                "1",
                env=env,
                cwd=workdir,
                timeout=IMPORT_TIMEOUT,
            )
            print(imported.stdout, imported.stderr[-3000:])
            assert imported.stdout.splitlines()[-4].startswith(f"  ssh -F ssh.config {name}  # ")
            # The importer runs the build's smoke commands and reports each.
            smoke_commands = manifest["profile"]["resolved"]["undercloud"]["smoke_commands"]
            for command in smoke_commands:
                assert f"smoke: {command}: ok" in imported.stdout
            assert (workdir / "ssh.config").is_file() and (workdir / "hosts").is_file()

            release_json = ssh_output(
                workdir, name, "cat", "/etc/undercloud-appliance/release.json"
            )
            print(f"release.json: {release_json.strip()}")
            assert json.loads(release_json)["build_id"] == build_id

            facts = ssh_output(
                workdir,
                name,
                "hostname; cat /etc/machine-id; df -B1 --output=size / | tail -1; "
                "sudo -n cat /root/.ssh/authorized_keys | wc -l; "
                f"cut -d' ' -f2 {HOST_KEY}",
            ).split()
            hostname, machine_id, root_size, root_keys, host_key = facts
            assert hostname == name
            assert len(machine_id) == 32
            assert int(root_size) > manifest["image"]["virtual_size"], "root fs was grown"
            assert int(root_keys) >= 1
            first_identity = keystone_identity(workdir, name)
            assert first_identity["clouds_yaml"], "stack's clouds.yaml has the admin password"
            assert not first_identity["on_a_command_line"], "the admin password is in ps"
            assert "credentials: ~stack/.config/openstack/clouds.yaml" in imported.stdout

            status = json.loads(run_cli("status", name, "--json", "--connect", uri, env=env).stdout)
            assert status["state"] == "running" and status["build_id"] == build_id
            assert status["sha256"] == manifest["image"]["sha256"]
            record = json.loads((tmp_path / "state" / name / "import.json").read_text())
            print(f"import timings: {record['timings']}")
            print(f"guest boot: {record['guest_boot_seconds']} s")
            overlay = Path(record["overlay"])
            cached_image = Path(record["image"])
            assert overlay.is_file() and cached_image.is_file()
            assert cached_image.stat().st_mode & 0o222 == 0
            check_qemu_is_unprivileged(uri, name, cached_image, Path(record["layer"]))
            pinned = check_host_keys_are_pinned(workdir, name, tmp_path / "state" / name)
            assert any(host_key in key for key in pinned)

            node = check_virtual_node(workdir, name, uri, env, manifest)
            node_disk = overlay.parent / "nodes" / f"{node}.qcow2"
            assert node_disk.is_file()
            if manifest.get("ironic_images"):
                (node_entry,) = yaml.safe_load((workdir / "nodes.yaml").read_text())["nodes"]
                timings = deploy_node_end_to_end(workdir, name, node_entry)
                print(f"deploy walk-through timings (s): {timings}")

            (workdir / "ssh.config").unlink()
            again = run_cli(
                "import", *common, "--nodes", "1", env=env, cwd=workdir, timeout=IMPORT_TIMEOUT
            )
            assert "already imported" in again.stdout, "importing again is a no-op"
            assert (workdir / "ssh.config").is_file(), "re-import rewrites ssh.config"
            again_record = json.loads((tmp_path / "state" / name / "import.json").read_text())
            print(f"re-import timings: {again_record['timings']}")
            assert "prepare-layer" not in again_record["timings"], "a re-import is a no-op"
            refused = run_cli("import", *common, env=env, cwd=workdir, check=False)
            assert refused.returncode != 0
            assert (
                refused.stderr.strip()
                .splitlines()[-1]
                .endswith(
                    f"appliance {name!r} has 1 virtual node(s); importing it with --nodes 0 "
                    "needs --replace"
                )
            )

            # --replace: torn down (the node and its BMC emulator too) and imported
            # afresh from the cached layer, which holds the appliance's host keys:
            # the same keys, pinned again (user networking: at a new port), and a
            # new machine-id.  The smoke test ran on the first import.
            replaced = run_cli(
                "import",
                *common,
                "--disk-size",
                str(disk_gib),
                "--replace",
                "--skip-smoke",
                env=env,
                cwd=workdir,
                timeout=IMPORT_TIMEOUT,
            )
            assert "already imported" not in replaced.stdout
            replaced_record = json.loads((tmp_path / "state" / name / "import.json").read_text())
            print(f"--replace timings: {replaced_record['timings']}")
            assert replaced_record["layer_reused"] is True
            assert replaced_record["layer"] == record["layer"]
            new_machine_id, new_host_key = ssh_output(
                workdir, name, f"cat /etc/machine-id; cut -d' ' -f2 {HOST_KEY}"
            ).split()
            assert len(new_machine_id) == 32 and new_machine_id != machine_id
            assert new_host_key == host_key, "the appliance keeps its pinned host keys"
            assert check_host_keys_are_pinned(workdir, name, tmp_path / "state" / name) == pinned
            # ... but a fresh disk makes its own passwords and Keystone keys
            # (undercloud-identity): the first copy's admin password and token
            # mean nothing to this one.
            identity = keystone_identity(workdir, name, old=first_identity)
            assert identity["password"] != first_identity["password"]
            assert identity["clouds_yaml"]
            assert identity["old_password_status"] == 401
            assert identity["old_token_status"] == 404, "a sibling's token was accepted"
            assert libvirt_domain.lookup(libvirt_domain.connect(uri), node) is None
            assert not node_disk.exists()
            assert not (workdir / "nodes.yaml").exists(), "the removed node's file went too"
            overlay = Path(replaced_record["overlay"])
        finally:
            destroyed = run_cli("destroy", name, "--connect", uri, env=env, check=False)
    assert destroyed.returncode == 0, destroyed.stderr
    print(destroyed.stdout)
    assert libvirt_domain.lookup(libvirt_domain.connect(uri), name) is None
    assert not overlay.exists()
    assert cached_image.is_file(), "destroy keeps the cache"
