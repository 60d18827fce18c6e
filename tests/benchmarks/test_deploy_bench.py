"""Deploying a node: each walk-through phase, and the parts of a deploy measured alone.

The walk-through is ``tests/functional/test_import.py``'s
``deploy_node_end_to_end`` (the README's "After import: deploy a node"
commands), on the session's ``debian-ci`` build imported with one virtual
node (``--nodes 1 --memory 4096 --vcpus 2 --network user``).  Timed there,
as the appliance's ``openstack`` commands see them: inspect, provide
(cleaning), deploy, and ssh after ``active`` (through the appliance).

Measured alone in the same run, before the import (no guest of ours
running), under plain qemu with the accelerator the project detects
(``undercloud_appliance.hypervisor``: TCG where KVM is unusable) and the
virtual node's shape (``importer.virtual_nodes``: memory, vCPUs, a virtio
disk of the node's size, virtio NIC and RNG):

a. ramdisk boot: the build's deploy kernel and initramfs (the manifest's
   ``ironic_images``: from the build-cache entry it names when that still
   holds the same bytes, else copied out of the appliance image with
   libguestfs), booted directly by qemu with the kernel command line of
   Ironic's iPXE deploy script (``selinux=0 troubleshoot=0 text``, the
   appliance's ``[pxe] kernel_append_params`` read from
   ``undercloud-setup``, ``BOOTIF``, ``ipa-api-url``, ...), until the agent's
   first request to ``ipa-api-url``: a listener on 127.0.0.1 that the guest
   reaches as 10.0.2.2 over qemu user networking and that answers 404 to
   everything (so the lookup goes nowhere).  Why that marker: the agent
   logs to the journal, not the serial console; the console shows only
   systemd's ``Started ... Ironic Python Agent.``, which is the process
   being started, before Python has imported the agent, probed the
   hardware and brought the network up.  The first lookup is the moment
   Ironic could first hear from the agent.  The console line is recorded
   and printed too, and both must be seen.  Not included (a lower bound
   for inspection's ramdisk boot): the firmware's DHCP and iPXE's download
   of the 230 MB kernel + initramfs from the appliance.
b. image write: what the agent does to write the deploy image: ``qemu-img
   convert -t directsync -S 0 -W`` of the deploy image's qcow2 to raw, here
   onto a sparse raw file of the node's disk size on the host.  A lower
   bound: the agent does it inside a TCG guest, after downloading the image
   over HTTP from the appliance and checking its sha256.
c. deployed OS boot: the disk written in b, booted under qemu with user
   networking and ssh forwarded to 127.0.0.1, until sshd sends its
   ``SSH-`` banner (no config drive: glean finds none and falls back).

Ratios printed: the deploy phase / (a + b + c), as the issue asks, and
inspect + provide + deploy + ssh after active / (a + b + c).  With fast
track the agent that booted for inspection also cleans and deploys, so the
deploy phase itself holds only the download, the write and a power cycle
(the ramdisk boot falls in inspect, the deployed system's boot in ssh after
active): the second ratio is the like-for-like one, what the whole path
costs over its three unavoidable parts.  During the walk-through the
appliance's guest shares the host's CPUs with the node; alone, nothing of
ours does.  Timings are printed, never asserted; only correctness is
(the phases succeed, the markers are seen).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from builders.build import cache_root
from builders.qemu_boot import free_port
from importer import virtual_nodes
from tests.conftest import REPO_ROOT, appliance_name_for_test, run_cli
from tests.functional.test_import import deploy_node_end_to_end
from tests.support.libvirtd import running_libvirtd
from tests.support.store_tree import lay_out_build
from undercloud_appliance.hypervisor import accelerator, open_guestfs, qemu_accel_args
from undercloud_appliance.manifest import file_sha256, read_manifest

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]

GIB = 1024**3
IMPORT_TIMEOUT = 20 * 60
BOOT_TIMEOUT = 15 * 60
KERNEL = "ipa.kernel"
INITRAMFS = "ipa.initramfs"
DEPLOY_IMAGE = "deploy-image.qcow2"
UNDERCLOUD_SETUP = REPO_ROOT / "elements/debian-undercloud/static/usr/local/sbin/undercloud-setup"
NODE_MAC = "52:54:00:de:90:01"
# systemd's status line when the agent's unit has started (the unit name is
# cut to the console's width: "Started ironic-python-agen…service - Ironic Python Agent.").
AGENT_UNIT_STARTED = re.compile(rb"Started [^\n]*Ironic Python Agent\.")
WALK_THROUGH_PHASES = ("inspect", "provide (cleaning)", "deploy", "ssh after active")


def kernel_append_params() -> str:
    """The appliance's Ironic ``[pxe] kernel_append_params``, as undercloud-setup writes it."""
    found = re.search(r"^kernel_append_params = (.+)$", UNDERCLOUD_SETUP.read_text(), re.M)
    assert found, f"{UNDERCLOUD_SETUP}: no [pxe] kernel_append_params"
    return found.group(1).strip()


def agent_command_line(api_url: str) -> str:
    """The kernel command line of Ironic's iPXE deploy script (ipxe_config.template)."""
    return (
        f"selinux=0 troubleshoot=0 text {kernel_append_params()} BOOTIF={NODE_MAC} "
        f"ipa-api-url={api_url} initrd={INITRAMFS} coreos.configdrive=0"
    )


def ironic_image_files(build: Path, target: Path) -> dict[str, Path]:
    """The build's deploy kernel, initramfs and deploy image, checked against its manifest.

    From the build-cache entry the manifest names when it still holds the
    same bytes (cache entries can be rebuilt since), else copied out of the
    appliance image (read-only) with libguestfs into ``target``.
    """
    images = read_manifest(build).get("ironic_images")
    assert images, f"{build}: the build has no Ironic images (manifest ironic_images)"
    files = images["files"]
    found: dict[str, Path] = {}
    for name in (KERNEL, INITRAMFS, DEPLOY_IMAGE):
        entry = files[name]
        cached = cache_root() / "build" / "ironic-images" / entry["cache"] / name
        if (
            cached.is_file()
            and cached.stat().st_size == entry["size"]
            and file_sha256(cached) == entry["sha256"]
        ):
            found[name] = cached
    missing = [name for name in (KERNEL, INITRAMFS, DEPLOY_IMAGE) if name not in found]
    if missing:
        target.mkdir(parents=True, exist_ok=True)
        handle = open_guestfs()
        try:
            handle.add_drive_opts(str(build / "undercloud.qcow2"), format="qcow2", readonly=True)
            handle.launch()
            (root,) = handle.inspect_os()
            handle.mount_ro(root, "/")
            for name in missing:
                handle.download(f"{images['directory']}/{name}", str(target / name))
                found[name] = target / name
            handle.umount_all()
            handle.shutdown()
        finally:
            handle.close()
        for name in missing:
            assert file_sha256(found[name]) == files[name]["sha256"], f"{name}: sha256 differs"
    sources = {name: "cache" if name not in missing else "image" for name in found}
    print(f"Ironic images from: {sources}")
    return found


@dataclass
class RequestRecorder:
    """An HTTP listener on 127.0.0.1 that answers 404 and records when requests came."""

    requests: list[tuple[float, str]] = field(default_factory=list)
    port: int = 0


@contextlib.contextmanager
def recording_listener() -> Iterator[RequestRecorder]:
    recorder = RequestRecorder()

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            recorder.requests.append((time.monotonic(), f"{self.command} {self.path}"))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = do_HEAD = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop qemu (the leader of its own process group) and anything it started."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)


@dataclass
class Guest:
    """A qemu guest of the virtual node's shape; ``started`` is when qemu was started."""

    process: subprocess.Popen
    serial_log: Path
    qemu_errors: Path
    started: float

    def serial_output(self) -> bytes:
        return self.serial_log.read_bytes() if self.serial_log.exists() else b""

    def wait_until(
        self, label: str, check: Callable[[], float | None], timeout: float = BOOT_TIMEOUT
    ) -> float:
        """Poll ``check`` (the monotonic time the event happened, or None) until it answers."""
        deadline = self.started + timeout
        while (when := check()) is None:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"qemu exited with {self.process.returncode} before {label}: "
                    f"{self.qemu_errors.read_text(errors='replace')[-1500:]} "
                    f"(serial console: {self.serial_output()[-1500:]!r})"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {label} within {timeout:.0f} s "
                    f"(serial console: {self.serial_output()[-1500:]!r})"
                )
            time.sleep(0.5)
        return when - self.started


@contextlib.contextmanager
def node_guest(scratch: Path, label: str, *args: str) -> Iterator[Guest]:
    """qemu with the node's memory, vCPUs, RNG and serial console; stopped on exit."""
    serial_log = scratch / f"{label}.serial.log"
    qemu_errors = scratch / f"{label}.qemu.stderr"
    serial_log.unlink(missing_ok=True)  # its markers must come from this boot
    command = [
        "qemu-system-x86_64",
        *qemu_accel_args(),
        "-m", str(virtual_nodes.NODE_MEMORY_MIB),
        "-smp", str(virtual_nodes.NODE_VCPUS),
        "-nographic",
        "-monitor", "none",
        "-serial", f"file:{serial_log}",
        "-device", "virtio-rng-pci",
        *args,
    ]  # fmt: skip
    with qemu_errors.open("wb") as errors:
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
        try:
            yield Guest(process, serial_log, qemu_errors, started)
        finally:
            stop_process_group(process)


def ramdisk_boot(kernel: Path, initramfs: Path, scratch: Path) -> dict[str, float | str]:
    """a: qemu start to the agent's first request to ipa-api-url (and to its unit started)."""
    node_disk = scratch / "ramdisk-node-disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(node_disk),
         f"{virtual_nodes.NODE_DISK_GIB}G"],
        check=True,
    )  # fmt: skip
    unit_started: list[float] = []

    def agent_unit_started() -> float | None:
        if not unit_started and AGENT_UNIT_STARTED.search(guest.serial_output()):
            unit_started.append(time.monotonic())
        return unit_started[0] if unit_started else None

    def first_request() -> float | None:
        agent_unit_started()
        return recorder.requests[0][0] if recorder.requests else None

    try:
        with (
            recording_listener() as recorder,
            node_guest(
                scratch,
                "ramdisk",
                "-kernel", str(kernel),
                "-initrd", str(initramfs),
                "-append", agent_command_line(f"http://10.0.2.2:{recorder.port}"),
                "-drive", f"file={node_disk},if=virtio,format=qcow2",
                "-netdev", "user,id=net0",
                "-device", f"virtio-net-pci,netdev=net0,mac={NODE_MAC}",
            ) as guest,
        ):  # fmt: skip
            lookup = guest.wait_until("request from the agent to ipa-api-url", first_request)
            unit = guest.wait_until("'Started ... Ironic Python Agent.' on the console",
                                    agent_unit_started, timeout=lookup + 60)  # fmt: skip
            return {"lookup": lookup, "unit started": unit, "request": recorder.requests[0][1]}
    finally:
        node_disk.unlink(missing_ok=True)


def image_write(deploy_image: Path, node_disk: Path) -> float:
    """b: the agent's qemu-img convert of the deploy image onto a raw disk of the node's size."""
    node_disk.unlink(missing_ok=True)
    with node_disk.open("wb") as disk:
        disk.truncate(virtual_nodes.NODE_DISK_GIB * GIB)
    started = time.monotonic()
    # IPA's whole-disk write (ironic-lib convert_image): out_format host_device,
    # cache directsync, out_of_order, sparse_size 0; -n: the disk exists.
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-n", "-t", "directsync",
         "-S", "0", "-W", str(deploy_image), str(node_disk)],
        check=True,
    )  # fmt: skip
    return time.monotonic() - started


def deployed_os_boot(node_disk: Path, scratch: Path) -> float:
    """c: qemu start to sshd's banner on the forwarded port, booting the written disk."""
    port = free_port()

    def ssh_banner() -> float | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                connection.settimeout(5)
                # qemu's forwarder accepts at once; only sshd sends "SSH-".
                if connection.recv(64).startswith(b"SSH-"):
                    return time.monotonic()
        except OSError:
            pass
        return None

    with node_guest(
        scratch,
        "deployed",
        "-drive", f"file={node_disk},if=virtio,format=raw",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", f"virtio-net-pci,netdev=net0,mac={NODE_MAC}",
    ) as guest:  # fmt: skip
        return guest.wait_until("ssh banner from the deployed system", ssh_banner)


def parts_alone(build: Path, scratch: Path) -> dict[str, float]:
    """a, b and c, each on its own; printed as they are measured."""
    files = ironic_image_files(build, scratch / "ironic-images")
    load = f"(load average {os.getloadavg()[0]:.1f})"
    ramdisk = ramdisk_boot(files[KERNEL], files[INITRAMFS], scratch)
    print(
        f"a. ramdisk boot to the agent's first request: {ramdisk['lookup']:.1f} s "
        f"({ramdisk['request']!r}; agent unit started at {ramdisk['unit started']:.1f} s) {load}",
        flush=True,
    )
    node_disk = scratch / "node-disk.raw"
    try:
        load = f"(load average {os.getloadavg()[0]:.1f})"
        write = image_write(files[DEPLOY_IMAGE], node_disk)
        print(f"b. image write (qemu-img convert on the host): {write:.1f} s {load}", flush=True)
        load = f"(load average {os.getloadavg()[0]:.1f})"
        boot = deployed_os_boot(node_disk, scratch)
        print(f"c. deployed OS boot to the ssh banner: {boot:.1f} s {load}", flush=True)
    finally:
        node_disk.unlink(missing_ok=True)
    return {
        "ramdisk boot (a)": float(ramdisk["lookup"]),
        "image write (b)": write,
        "deployed OS boot (c)": boot,
    }


def walk_through(build: Path, tmp_path: Path) -> dict[str, float]:
    """Import with one node, deploy it (the functional suite's walk-through), destroy."""
    manifest = read_manifest(build)
    release, build_id = lay_out_build(tmp_path / "store", build, labels=())
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {
        **os.environ,
        "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache"),
        "UNDERCLOUD_APPLIANCE_STATE": str(tmp_path / "state"),
    }
    name = appliance_name_for_test("deploy-bench")
    with running_libvirtd() as uri:
        try:
            started = time.monotonic()
            run_cli(
                "import", f"file://{tmp_path / 'store'}",
                "--release", release,
                "--build", build_id,
                "--name", name,
                "--network", "user",
                "--memory", "4096",
                "--vcpus", "2",
                "--disk-size", str(manifest["image"]["virtual_size"] // GIB + 2),
                "--nodes", "1",
                "--connect", uri,
                env=env, cwd=workdir, timeout=IMPORT_TIMEOUT,
            )  # fmt: skip
            print(f"import --nodes 1: {time.monotonic() - started:.1f} s", flush=True)
            (node,) = yaml.safe_load((workdir / "nodes.yaml").read_text())["nodes"]
            timings = deploy_node_end_to_end(workdir, name, node)
        finally:
            destroyed = run_cli("destroy", name, "--connect", uri, env=env, check=False)
            if destroyed.returncode == 0:
                # The store's hard links, the fetched image, the layer and the state.
                for directory in ("store", "cache", "state"):
                    shutil.rmtree(tmp_path / directory, ignore_errors=True)
    assert destroyed.returncode == 0, destroyed.stderr
    return timings


def test_deploy_phases_vs_parts_alone(appliance_build: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "alone"
    scratch.mkdir()
    print(f"\naccelerator: {accelerator()}; node: {virtual_nodes.NODE_MEMORY_MIB} MiB, "
          f"{virtual_nodes.NODE_VCPUS} vCPU, {virtual_nodes.NODE_DISK_GIB} GiB disk")  # fmt: skip
    try:
        alone = parts_alone(appliance_build, scratch)
    finally:
        shutil.rmtree(scratch)  # the copied Ironic images, serial logs
    timings = walk_through(appliance_build, tmp_path)
    print(f"deploy walk-through timings (s): {json.dumps(timings)}")

    parts = sum(alone.values())
    path = sum(timings[phase] for phase in WALK_THROUGH_PHASES)
    counterpart = {
        "inspect": "ramdisk boot (a)",
        "deploy": "image write (b)",
        "ssh after active": "deployed OS boot (c)",
    }
    print(f"\ndeploying a node ({accelerator()}, qemu user networking on 127.0.0.1):")
    print(f"{'walk-through phase':<22} {'seconds':>8}   {'measured alone':<22} {'seconds':>8}")
    for phase in WALK_THROUGH_PHASES:
        part = counterpart.get(phase)
        alone_column = f"{part:<22} {alone[part]:8.1f}" if part else ""
        print(f"{phase:<22} {timings[phase]:8.1f}   {alone_column}")
    print(f"{'sum':<22} {path:8.1f}   {'a + b + c':<22} {parts:8.1f}")
    print(f"deploy / (a + b + c): {timings['deploy'] / parts:.2f}x")
    print(f"(inspect + provide + deploy + ssh after active) / (a + b + c): {path / parts:.2f}x")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
