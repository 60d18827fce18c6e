"""Publishing and importing meet: what the real ``publish`` writes, the importer reads.

A build is published with ``publish --sign-key`` (a GPG key made here in a
temporary GNUPGHOME) to a store started here, then fetched with
``fetch --trusted-key FINGERPRINT``, which checks SHA256SUMS.sig against
that key, then imported and booted under libvirt.  Stores: nginx with
WebDAV, and sshd with rsync (``ssh://``).

A signature by another key in the keyring (a good signature, but not by
the trusted key) is refused by fetch with one line, and nothing is cached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from importer import libvirt_domain
from tests.conftest import appliance_name_for_test, run_cli
from tests.support.appliance_ssh import ssh_output
from tests.support.fake_build import make_fake_build
from tests.support.gpg_keys import make_signing_key, stop_gpg_agent
from tests.support.libvirtd import running_libvirtd
from tests.support.nginx import NginxServer
from tests.support.requirements import skip_or_fail
from tests.support.sshd import SshServer

IMPORT_TIMEOUT = 20 * 60
TRANSFER_TIMEOUT = 10 * 60
GIB = 1024**3


@dataclass(frozen=True)
class SigningKeys:
    """A GNUPGHOME holding two signing keys: the trusted one and another."""

    home: Path
    trusted: str  # fingerprints
    other: str

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home), **extra}


@dataclass
class Store:
    """A store URL the CLI publishes to and fetches from, and what reaching it needs."""

    kind: str
    url: str
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKeys]:
    if shutil.which("gpg") is None:
        skip_or_fail("gpg is not installed (scripts/host-packages.txt: gnupg)")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    keys = SigningKeys(
        home,
        trusted=make_signing_key(home, "publisher@example.invalid"),
        other=make_signing_key(home, "someone-else@example.invalid"),
    )
    try:
        yield keys
    finally:
        stop_gpg_agent(home)


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with SshServer() as server:
        yield server


@pytest.fixture(params=["webdav", "ssh"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    root = tmp_path / "store"
    root.mkdir()
    if request.param == "webdav":
        # Read access without credentials, as the importer reads stores.
        with NginxServer(root, dav=True) as server:
            yield Store("webdav", f"{server.url}/")
    else:
        server: SshServer = request.getfixturevalue("sshd")
        yield Store(
            "ssh", server.url(root), {"UNDERCLOUD_APPLIANCE_SSH_COMMAND": server.ssh_command}
        )


def manifest_of(build: Path) -> dict:
    return json.loads((build / "manifest.json").read_text())


def publish(store: Store, keys: SigningKeys, build: Path, sign_key: str) -> None:
    run_cli(
        "publish",
        str(build),
        "--store",
        store.url,
        "--sign-key",
        sign_key,
        env=keys.env(**store.env),
        timeout=TRANSFER_TIMEOUT,
    )


def fetch(
    store: Store, keys: SigningKeys, cache: Path, build: Path, check: bool = True
) -> subprocess.CompletedProcess:
    manifest = manifest_of(build)
    return run_cli(
        "fetch",
        store.url,
        "--release",
        manifest["release"],
        "--build",
        manifest["build_id"],
        "--trusted-key",
        keys.trusted,
        env=keys.env(**store.env, UNDERCLOUD_APPLIANCE_CACHE=str(cache)),
        check=check,
        timeout=TRANSFER_TIMEOUT,
    )


def cached_images(cache: Path) -> list[Path]:
    """Images and partial downloads anywhere in the cache."""
    if not cache.exists():
        return []
    return sorted(p for p in cache.rglob("*") if p.name.endswith((".qcow2", ".partial")))


@pytest.mark.slow
def test_fetch_verifies_a_signed_publish(
    store: Store, signing_keys: SigningKeys, appliance_build: Path, tmp_path: Path
) -> None:
    manifest = manifest_of(appliance_build)
    publish(store, signing_keys, appliance_build, signing_keys.trusted)
    fetched = json.loads(fetch(store, signing_keys, tmp_path / "cache", appliance_build).stdout)
    assert fetched["build_id"] == manifest["build_id"]
    assert fetched["sha256"] == manifest["image"]["sha256"]
    assert fetched["from_cache"] is False
    assert Path(fetched["path"]).is_file()


def test_a_signature_by_another_key_is_refused(
    store: Store, signing_keys: SigningKeys, tmp_path: Path
) -> None:
    build = make_fake_build(tmp_path / "build", "debian-ci")
    publish(store, signing_keys, build, signing_keys.other)
    cache = tmp_path / "cache"
    refused = fetch(store, signing_keys, cache, build, check=False)
    assert refused.returncode == 6, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    assert f"not a valid signature by trusted key {signing_keys.trusted}" in refused.stderr
    assert refused.stdout == ""
    assert cached_images(cache) == []


@pytest.mark.slow
# One store kind boots the import: the signed fetch over each kind is
# test_fetch_verifies_a_signed_publish's, and the import boots the image
# from the cache the same way whichever store it came from (3 min a boot).
@pytest.mark.parametrize("store", ["webdav"], indirect=True)
def test_signed_publish_is_imported(
    store: Store, signing_keys: SigningKeys, appliance_build: Path, tmp_path: Path
) -> None:
    manifest = manifest_of(appliance_build)
    release, build_id = manifest["release"], manifest["build_id"]
    cache, workdir, handoff = tmp_path / "cache", tmp_path / "work", tmp_path / "handoff"
    workdir.mkdir()
    handoff.mkdir()
    # The import runs where a hosts file it did not write lives (as in /etc):
    # --handoff-dir sends its files elsewhere, and that one stays as it was.
    system_hosts = "127.0.0.1 localhost\n"
    (workdir / "hosts").write_text(system_hosts)
    env = signing_keys.env(
        **store.env,
        UNDERCLOUD_APPLIANCE_CACHE=str(cache),
        UNDERCLOUD_APPLIANCE_STATE=str(tmp_path / "state"),
    )
    name = appliance_name_for_test(f"publish-import-{store.kind}")
    with running_libvirtd() as uri:
        assert libvirt_domain.lookup(libvirt_domain.connect(uri), name) is None, (
            f"a domain named {name!r} already exists on this host"
        )
        publish(store, signing_keys, appliance_build, signing_keys.trusted)
        fetched = json.loads(fetch(store, signing_keys, cache, appliance_build).stdout)
        assert fetched["sha256"] == manifest["image"]["sha256"]
        try:
            imported = run_cli(
                "import",
                store.url,
                "--release",
                release,
                "--build",
                build_id,
                "--trusted-key",
                signing_keys.trusted,
                "--name",
                name,
                "--connect",
                uri,
                "--network",
                "user",
                "--memory",
                "2560",  # Keystone, Ironic, ironic-inspector
                "--vcpus",
                "2",
                "--disk-size",
                str(manifest["image"]["virtual_size"] // GIB + 1),
                # test_import.py runs the smoke commands; here the boot and ssh suffice.
                "--skip-smoke",
                "--handoff-dir",
                str(handoff),
                env=env,
                cwd=workdir,
                timeout=IMPORT_TIMEOUT,
            )
            print(imported.stdout, imported.stderr[-3000:])
            assert imported.stdout.splitlines()[-4].startswith(
                f"  ssh -F {handoff}/ssh.config {name}"
            )
            assert (workdir / "hosts").read_text() == system_hosts
            assert sorted(path.name for path in workdir.iterdir()) == ["hosts"]
            for written in ("ssh.config", "hosts"):
                assert (handoff / written).read_text().startswith("# Written by undercloud-")
            release_json = ssh_output(
                handoff, name, "cat", "/etc/undercloud-appliance/release.json"
            )
            assert json.loads(release_json)["build_id"] == build_id
            record = json.loads((tmp_path / "state" / name / "import.json").read_text())
            assert Path(record["image"]) == Path(fetched["path"]), "import used the fetched image"
            # The appliance stays under the key: update and the smoke test check the
            # recorded manifest (the bytes published) against its signature again.
            assert record["trusted_key"] == signing_keys.trusted
            assert (
                Path(record["manifest"]).read_bytes()
                == (appliance_build / "manifest.json").read_bytes()
            )
        finally:
            destroyed = run_cli("destroy", name, "--connect", uri, env=env, check=False)
    assert destroyed.returncode == 0, destroyed.stderr
