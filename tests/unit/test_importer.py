"""Unit tests of the importer's pure parts: domain XML, handoff files, cache, keys."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from importer import libvirt_domain
from importer.appliance_state import check_name, clear_state, has_appliance_state
from importer.cache import ImageCache
from importer.customise import Customisation
from importer.fetch import resolve_build_id
from importer.handoff import (
    NodeEndpoint,
    SshEndpoint,
    given_ssh_key,
    inventory_text,
    ssh_config_text,
)
from importer.host_keys import (
    appliance_host_keys,
    host_keys_dir,
    known_hosts_pattern,
    recorded_host_keys,
    write_known_hosts,
)
from importer.imports import ImportContext, ImportOptions, grow_to_bytes, layer_key
from importer.signature import normalise_fingerprint, signature_problem, signing_fingerprints
from undercloud_appliance.errors import (
    ApplianceError,
    NotFoundError,
    StoreError,
    UntrustedStoreData,
)
from undercloud_appliance.hypervisor import libvirt_domain_type
from undercloud_appliance.stores import open_store
from undercloud_appliance.stores.webdav import _range_starts_at, refuse_downgrade

QEMU = "{http://libvirt.org/schemas/domain/qemu/1.0}"
SHA = "a" * 64


def spec(network: str, port: int | None = None) -> libvirt_domain.DomainSpec:
    return libvirt_domain.DomainSpec(
        name="undercloud",
        overlay=Path("/state/undercloud/overlay.qcow2"),
        memory_mib=2048,
        vcpus=2,
        network=network,
        ssh_port=port,
        console_log=Path("/state/undercloud/console.log"),
        metadata={"build-id": "20261122T041800Z-1a2b3c", "release": "debian-ci", "sha256": SHA},
    )


def test_domain_xml_user_network_forwards_ssh_and_runs_qemu_as_libvirts_user() -> None:
    root = ET.fromstring(libvirt_domain.domain_xml(spec("user", 40022)))
    assert root.get("type") == libvirt_domain_type()
    assert root.findtext("memory") == "2048" and root.find("memory").get("unit") == "MiB"
    assert root.find("devices/disk/source").get("file") == "/state/undercloud/overlay.qcow2"
    assert root.find("devices/disk/driver").get("type") == "qcow2"
    assert root.find("devices/interface") is None
    args = [arg.get("value") for arg in root.iter(f"{QEMU}arg")]
    assert "user,id=un0,hostfwd=tcp:127.0.0.1:40022-:22" in args
    assert "virtio-net-pci,netdev=un0,addr=0x10" in args
    # libvirt's default dynamic DAC label: qemu as libvirt's qemu user, never as us (root).
    assert root.find("seclabel") is None
    log = root.find("devices/serial/log")
    assert log.get("file") == "/state/undercloud/console.log"


def test_domain_xml_names_the_backing_chain_and_never_relabels_it() -> None:
    chain = (Path("/cache/layers/a-b.qcow2"), Path("/cache/a.qcow2"))
    root = ET.fromstring(
        libvirt_domain.domain_xml(dataclasses.replace(spec("user", 40022), backing_chain=chain))
    )
    backing = root.find("devices/disk/backingStore")
    seen = []
    while backing is not None and backing.find("source") is not None:
        source = backing.find("source")
        seen.append(Path(source.get("file")))
        assert backing.find("format").get("type") == "qcow2"
        assert source.find("seclabel").get("relabel") == "no"
        backing = backing.find("backingStore")
    assert seen == list(chain)
    assert backing is not None and len(backing) == 0, "the chain ends with an empty backingStore"


def test_domain_xml_runs_qemu_as_the_importer_only_when_asked() -> None:
    asked = dataclasses.replace(spec("default"), qemu_user=libvirt_domain.QEMU_USER_IMPORTER)
    root = ET.fromstring(libvirt_domain.domain_xml(asked))
    assert root.findtext("seclabel/label") == f"+{os.getuid()}:+{os.getgid()}"
    assert root.find("seclabel").get("relabel") == "no"
    with pytest.raises(ApplianceError, match="qemu user 'nobody'"):
        libvirt_domain.domain_xml(dataclasses.replace(spec("default"), qemu_user="nobody"))


def test_domain_xml_default_network_and_metadata_round_trip() -> None:
    root = ET.fromstring(libvirt_domain.domain_xml(spec("default")))
    interface = root.find("devices/interface")
    assert interface.get("type") == "network"
    assert interface.find("source").get("network") == "default"
    assert not list(root.iter(f"{QEMU}commandline"))
    (appliance,) = list(root.find("metadata"))
    assert appliance.tag == f"{{{libvirt_domain.METADATA_NAMESPACE}}}appliance"
    fields = {child.tag.split("}")[-1]: child.text for child in appliance}
    assert fields == {"build-id": "20261122T041800Z-1a2b3c", "release": "debian-ci", "sha256": SHA}


def test_domain_xml_escapes_and_rejects_unknown_network() -> None:
    text = libvirt_domain.metadata_xml({"puddle": "a<b&c"})
    assert ET.fromstring(text)[0].text == "a<b&c"
    with pytest.raises(ApplianceError, match="network 'bridge'"):
        libvirt_domain.domain_xml(spec("bridge"))


def endpoint() -> SshEndpoint:
    return SshEndpoint(
        name="undercloud",
        host="127.0.0.1",
        port=40022,
        identity=Path("/state/undercloud/id_ed25519"),
        known_hosts=Path("/state/undercloud/known_hosts"),
    )


def test_ssh_config_names_everything_ssh_needs() -> None:
    lines = [line.split(None, 1) for line in ssh_config_text(endpoint()).splitlines()]
    settings = {key: value for key, value in lines}
    assert settings["Host"] == "undercloud"
    assert settings["HostName"] == "127.0.0.1" and settings["Port"] == "40022"
    assert settings["User"] == "stack"
    assert settings["IdentityFile"] == "/state/undercloud/id_ed25519"
    assert settings["StrictHostKeyChecking"] == "yes", "never trust a host key on first use"
    assert settings["UserKnownHostsFile"] == "/state/undercloud/known_hosts"


def test_inventory_is_an_ansible_ini_group() -> None:
    group, host_line = inventory_text(endpoint()).splitlines()
    assert group == "[undercloud]"
    words = shlex.split(host_line)
    assert words[0] == "undercloud"
    variables = dict(word.split("=", 1) for word in words[1:])
    assert variables["ansible_host"] == "127.0.0.1" and variables["ansible_port"] == "40022"
    assert variables["ansible_user"] == "stack"
    common_args = variables["ansible_ssh_common_args"].split()
    assert "UserKnownHostsFile=/state/undercloud/known_hosts" in common_args
    assert "StrictHostKeyChecking=yes" in common_args


def test_nodes_are_reached_through_the_appliance_in_both_files(tmp_path: Path) -> None:
    nodes = [NodeEndpoint("undercloud-node-1", "192.168.24.100")]
    config = tmp_path / "ssh.config"
    config.write_text(ssh_config_text(endpoint(), nodes))
    # OpenSSH itself reads the file: what `ssh -F ssh.config undercloud-node-1` would use.
    effective = subprocess.run(
        ["ssh", "-F", str(config), "-G", "undercloud-node-1"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    settings = dict(line.split(" ", 1) for line in effective.splitlines() if " " in line)
    assert settings["hostname"] == "192.168.24.100"
    assert settings["user"] == "root"
    assert settings["proxyjump"] == "undercloud"
    assert settings["identityfile"] == "/state/undercloud/id_ed25519"
    appliance = subprocess.run(
        ["ssh", "-F", str(config), "-G", "undercloud"], capture_output=True, text=True, check=True
    ).stdout
    assert "port 40022" in appliance.splitlines()

    lines = inventory_text(endpoint(), nodes, config).splitlines()
    assert lines[lines.index("[baremetal]") + 1].startswith("undercloud-node-1 ")
    words = shlex.split(lines[lines.index("[baremetal]") + 1])
    variables = dict(word.split("=", 1) for word in words[1:])
    assert variables["ansible_host"] == "192.168.24.100"
    assert f"ssh -F {config} -W %h:%p undercloud" in variables["ansible_ssh_common_args"]


def test_given_ssh_key_accepts_private_or_public_and_names_missing_files(tmp_path: Path) -> None:
    private = tmp_path / "id_test"
    private.write_text("PRIVATE\n")
    with pytest.raises(NotFoundError, match=r"id_test\.pub: no such file") as missing:
        given_ssh_key(private)
    assert missing.value.exit_code == 5
    (tmp_path / "id_test.pub").write_text("ssh-ed25519 AAAA test\n")
    assert given_ssh_key(private).public == tmp_path / "id_test.pub"
    assert given_ssh_key(tmp_path / "id_test.pub").private == private
    (tmp_path / "id_test.pub").write_text("not a key\n")
    with pytest.raises(ApplianceError, match="not an OpenSSH public key"):
        given_ssh_key(private)


def test_signing_fingerprints_reads_validsig_lines() -> None:
    fpr = "A" * 40
    primary = "B" * 40
    status = (
        "[GNUPG:] NEWSIG\n"
        f"[GNUPG:] GOODSIG 0123 someone\n"
        f"[GNUPG:] VALIDSIG {fpr} 2026-11-22 1790000000 0 4 0 22 10 00 {primary}\n"
    )
    assert signing_fingerprints(status) == {fpr, primary}
    assert signing_fingerprints("[GNUPG:] BADSIG 0123 x\n") == set()


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("", None),
        ("[GNUPG:] EXPKEYSIG 0123 someone\n", "expired key"),
        ("[GNUPG:] REVKEYSIG 0123 someone\n", "revoked key"),
        ("[GNUPG:] EXPSIG 0123 someone\n", "expired signature"),
        ("[GNUPG:] BADSIG 0123 someone\n", "bad signature"),
        ("[GNUPG:] ERRSIG 0123 1 10 00 1790000000 9 -\n", "cannot check"),
        ("[GNUPG:] NO_PUBKEY 0123\n", "not in the keyring"),
    ],
)
def test_only_good_unexpired_unrevoked_signatures_count(extra: str, problem: str | None) -> None:
    """gpg exits 0 for a revoked or expired key; the status lines decide (as apt's gpgv)."""
    fpr = "A" * 40
    good = (
        "[GNUPG:] NEWSIG\n"
        "[GNUPG:] GOODSIG 0123 someone\n"
        f"[GNUPG:] VALIDSIG {fpr} 2026-11-22 1790000000 0 4 0 22 10 00 {fpr}\n"
    )
    found = signature_problem(good + extra, fpr)
    assert found is None if problem is None else problem in found
    assert "no good signature" in signature_problem(good, "B" * 40)
    assert "no good signature" in signature_problem(good.replace("GOODSIG", "NOTE"), fpr)


@pytest.mark.parametrize(
    ("source", "target", "refused"),
    [
        ("https://store.example/a", "http://store.example/a", True),
        ("https://store.example/a", "ftp://store.example/a", True),
        ("https://store.example/a", "https://mirror.example/a", False),
        ("http://store.example/a", "http://mirror.example/a", False),
        ("http://store.example/a", "https://store.example/a", False),
    ],
)
def test_redirects_never_leave_https(source: str, target: str, refused: bool) -> None:
    if refused:
        with pytest.raises(UntrustedStoreData, match="redirected from https"):
            refuse_downgrade(source, target)
    else:
        refuse_downgrade(source, target)


def test_fingerprints_are_normalised_and_checked() -> None:
    assert normalise_fingerprint("0x" + "abcd " * 10) == "ABCD" * 10
    with pytest.raises(ApplianceError, match="40-hex-digit"):
        normalise_fingerprint("ABCD1234")


def test_cache_commit_makes_a_read_only_image_and_drops_resume_state(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache").ensure()
    cache.partial_path(SHA).write_bytes(b"image")
    cache.write_partial_state(SHA, {"etag": '"x"'})
    final = cache.commit_partial(SHA)
    assert final == tmp_path / "cache" / f"{SHA}.qcow2"
    assert final.stat().st_mode & 0o777 == 0o444
    assert not cache.partial_path(SHA).exists()
    assert not cache.partial_state_path(SHA).exists()
    assert cache.has_image(SHA, 5) and not cache.has_image(SHA, 6)
    manifest = cache.keep_manifest(b'{"manifest": true}\n')
    assert manifest.name == f"{hashlib.sha256(manifest.read_bytes()).hexdigest()}.json"
    cache.remember_build("debian-ci", "20261122T041800Z-1a2b3c", SHA, manifest)
    assert cache.known_build("debian-ci", "20261122T041800Z-1a2b3c") == (SHA, manifest)
    assert cache.known_build("debian-ci", "20261122T041800Z-ffffff") is None
    with pytest.raises(ApplianceError, match="invalid sha256"):
        cache.image_path("../etc/passwd")


def test_label_resolution_reads_build_id_and_rejects_garbage(tmp_path: Path) -> None:
    label_dir = tmp_path / "debian-ci" / "latest"
    label_dir.mkdir(parents=True)
    (label_dir / "BUILD_ID").write_text("20261122T041800Z-1a2b3c\n")
    store = open_store(f"file://{tmp_path}")
    assert resolve_build_id(store, "debian-ci", "latest") == "20261122T041800Z-1a2b3c"
    (label_dir / "BUILD_ID").write_text("../../etc\n")
    with pytest.raises(StoreError, match="not a build id"):
        resolve_build_id(store, "debian-ci", "latest")
    with pytest.raises(NotFoundError, match="'stable'"):
        resolve_build_id(store, "debian-ci", "stable")
    with pytest.raises(ApplianceError, match="use file://"):
        open_store("ftp://example.invalid/store")


def test_appliance_names_and_disk_growth() -> None:
    assert check_name("undercloud-2") == "undercloud-2"
    for bad in ("", "../x", "a b", "-x"):
        with pytest.raises(ApplianceError, match="invalid appliance name"):
            check_name(bad)
    gib = 1024**3
    fetched = SimpleNamespace(manifest={"image": {"virtual_size": 10 * gib}})
    for asked, expected in ((None, None), (5, None), (10, None), (40, 40 * gib)):
        context = ImportContext(
            ImportOptions("u", "file:///s", "debian-ci", disk_size_gib=asked), Path("/s")
        )
        context.fetched = fetched  # type: ignore[assignment]
        assert grow_to_bytes(context) == expected


def test_content_range_must_start_where_the_partial_ends() -> None:
    response = SimpleNamespace(headers={"Content-Range": "bytes 100-199/200"})
    assert _range_starts_at(response, 100)  # type: ignore[arg-type]
    assert not _range_starts_at(response, 0)  # type: ignore[arg-type]
    assert not _range_starts_at(SimpleNamespace(headers={}), 100)  # type: ignore[arg-type]


def test_host_keys_are_made_once_private_and_pinned_as_ssh_looks_them_up(
    tmp_path: Path,
) -> None:
    state = tmp_path / "undercloud"
    keys = appliance_host_keys(state)
    assert [key.key_type for key in keys] == ["ed25519", "ecdsa", "rsa"]
    assert host_keys_dir(state).stat().st_mode & 0o777 == 0o700
    for key in keys:
        assert key.private.stat().st_mode & 0o777 == 0o600
        assert key.guest_private_path == f"/etc/ssh/ssh_host_{key.key_type}_key"
        assert key.guest_public_path == f"/etc/ssh/ssh_host_{key.key_type}_key.pub"
    assert appliance_host_keys(state) == keys == recorded_host_keys(state)
    first = [key.public_key() for key in keys]
    assert [key.public_key() for key in appliance_host_keys(state)] == first, "made once"
    keys[1].public.unlink()
    assert recorded_host_keys(state) is None, "a pair made in part is not a set"
    assert [key.public_key() for key in appliance_host_keys(state)] != first, "made again"

    # OpenSSH itself finds the pinned keys under the names ssh.config makes it look up.
    known_hosts = tmp_path / "known_hosts"
    write_known_hosts(known_hosts, "127.0.0.1", 40022, keys)
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    for host, port in (("127.0.0.1", 40022), ("192.168.122.5", 22)):
        write_known_hosts(known_hosts, host, port, keys)
        lookup = known_hosts_pattern(host, port)
        found = subprocess.run(
            ["ssh-keygen", "-F", lookup, "-f", str(known_hosts)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert sum(key.public_key() in found for key in keys) == 3
    assert known_hosts_pattern("127.0.0.1", 40022) == "[127.0.0.1]:40022"
    assert known_hosts_pattern("192.168.122.5", 22) == "192.168.122.5"


def test_layer_key_changes_with_key_hostname_and_size() -> None:
    base = Customisation(hostname="undercloud", authorized_key="ssh-ed25519 AAAA a")
    key = layer_key(base, None)
    assert len(key) == 16 and key == layer_key(base, None)
    assert key == layer_key(Customisation("undercloud", "ssh-ed25519 AAAA a\n"), None)
    others = {
        layer_key(Customisation("other", "ssh-ed25519 AAAA a"), None),
        layer_key(Customisation("undercloud", "ssh-ed25519 BBBB b"), None),
        layer_key(base, 40 * 1024**3),
    }
    assert key not in others and len(others) == 3


def test_layer_key_changes_with_the_host_keys(tmp_path: Path) -> None:
    """A layer holds the appliance's host keys: another appliance's keys, another layer."""
    ours = tuple(appliance_host_keys(tmp_path / "a"))
    theirs = tuple(appliance_host_keys(tmp_path / "b"))
    base = Customisation("undercloud", "ssh-ed25519 AAAA a", host_keys=ours)
    assert layer_key(base, None) == layer_key(dataclasses.replace(base), None)
    assert layer_key(base, None) != layer_key(dataclasses.replace(base, host_keys=theirs), None)
    assert layer_key(base, None) != layer_key(dataclasses.replace(base, host_keys=()), None)


def test_clear_state_keeps_only_the_key_pairs(tmp_path: Path) -> None:
    state = tmp_path / "undercloud"
    state.mkdir()
    for name in ("id_ed25519", "id_ed25519.pub", "overlay.qcow2", "import.json", "known_hosts"):
        (state / name).write_text(name)
    appliance_host_keys(state)
    assert has_appliance_state(state)
    clear_state(state)
    assert sorted(p.name for p in state.iterdir()) == ["host-keys", "id_ed25519", "id_ed25519.pub"]
    assert recorded_host_keys(state) is not None, "the next import pins the same host keys"
    assert not has_appliance_state(state)
    clear_state(state, keep_key=False)
    assert not state.exists(), "an empty state directory is removed"
