"""What a hostile store can try against ``fetch`` (and ``update``/``upgrade``),
each served on 127.0.0.1 and refused with one line, exit 6, nothing cached.

The store is laid out as ``publish`` does (tests.support.store_tree) and
signed with a key made here; the server (tests.support.hostile_http) serves
it over HTTP or HTTPS and lies where a test says: sizes, redirects.  Other
lies are edits of the files it serves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from importer.published_build import read_cached_manifest
from importer.updates.online import OnlineUpdateContext, step_read_target_release
from tests.conftest import run_cli
from tests.support.fake_build import make_fake_build
from tests.support.gpg_keys import (
    gnupg_env,
    make_expired_signing_key,
    make_signing_key,
    revoke_key,
    sign_detached,
    stop_gpg_agent,
)
from tests.support.hostile_http import HostileStore, make_self_signed_certificate
from tests.support.requirements import skip_or_fail
from tests.support.store_tree import lay_out_build
from undercloud_appliance.errors import ChecksumError
from undercloud_appliance.store_layout import (
    BUILD_ID_NAME,
    IMAGE_NAME,
    MANIFEST_NAME,
    SHA256_NAME,
    SIGNATURE_NAME,
    SMALL_FILE_LIMITS,
    SUMS_NAME,
)

MIB = 1024 * 1024
RELEASE = "debian-ci"
OLD_ID = "20261120T040000Z-0000a1"
NEW_ID = "20261122T040000Z-0000b2"


@dataclass
class SignedStore:
    root: Path
    home: Path  # GNUPGHOME
    key: str  # the trusted fingerprint
    env: dict[str, str]  # GNUPGHOME and a cache of the test's own

    def build_dir(self, build_id: str) -> Path:
        return self.root / RELEASE / build_id

    def publish(self, build: Path, labels: tuple[str, ...] = ("latest",)) -> str:
        """Lay out and sign ``build``; return its build id."""
        release, build_id = lay_out_build(self.root, build, labels)
        for name in (build_id, *labels):
            sign_detached(self.home, self.root / release / name / SUMS_NAME, self.key)
        return build_id

    def cached(self) -> list[str]:
        """Images, partials and manifests in the cache."""
        cache = Path(self.env["UNDERCLOUD_APPLIANCE_CACHE"])
        return sorted(
            str(path.relative_to(cache))
            for path in cache.rglob("*")
            if path.name.endswith((".qcow2", ".partial", ".json"))
        )


@pytest.fixture
def signed_store(tmp_path: Path) -> Iterator[SignedStore]:
    if shutil.which("gpg") is None:
        skip_or_fail("gpg is not installed (scripts/host-packages.txt: gnupg)")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    key = make_signing_key(home, "store@example.invalid", expires="never")
    env = {**gnupg_env(home), "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache")}
    env.pop("UNDERCLOUD_APPLIANCE_TRUSTED_KEY", None)
    try:
        yield SignedStore(tmp_path / "store", home, key, env)
    finally:
        stop_gpg_agent(home)


def fetch(url: str, store: SignedStore, *extra: str, signed: bool = True, **env: str):
    key = ("--trusted-key", store.key) if signed else ()
    return run_cli(
        "fetch", url, "--release", RELEASE, *key, *extra, env={**store.env, **env}, check=False
    )


def assert_refused(result, *words: str) -> None:
    """Exit 6 and one error line holding ``words``, no traceback."""
    assert result.returncode == 6, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in errors[0], errors[0]


def tampered_manifest(path: Path, **changes: object) -> None:
    """Give the manifest ``path`` other smoke commands (run with sudo) and ``changes``."""
    manifest = json.loads(path.read_text())
    manifest["profile"]["resolved"] = {"undercloud": {"smoke_commands": ["touch /tmp/owned"]}}
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


# -- what the signature covers --------------------------------------------------


def test_a_manifest_the_signature_does_not_cover_is_refused(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    build_id = signed_store.publish(make_fake_build(tmp_path / "build", RELEASE))
    tampered_manifest(signed_store.build_dir(build_id) / MANIFEST_NAME)
    with HostileStore(signed_store.root) as server:
        result = fetch(server.url, signed_store, "--build", build_id)
    assert_refused(result, MANIFEST_NAME, "signed SHA256SUMS")
    assert signed_store.cached() == []


def test_an_old_signed_build_under_a_newer_id_or_label_is_refused(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    """The old build's signed files in the newer build's directory, with a manifest
    edited to match: only the signed BUILD_ID tells."""
    old = signed_store.publish(make_fake_build(tmp_path / "old", RELEASE, build_id=OLD_ID))
    replay = signed_store.build_dir(NEW_ID)
    shutil.copytree(signed_store.build_dir(old), replay)
    tampered_manifest(replay / MANIFEST_NAME, build_id=NEW_ID)
    shutil.rmtree(signed_store.root / RELEASE / "latest")
    shutil.copytree(replay, signed_store.root / RELEASE / "latest")
    (signed_store.root / RELEASE / "latest" / BUILD_ID_NAME).write_text(f"{NEW_ID}\n")
    with HostileStore(signed_store.root) as server:
        by_id = fetch(server.url, signed_store, "--build", NEW_ID)
        by_label = fetch(server.url, signed_store)
    assert_refused(by_id, BUILD_ID_NAME, OLD_ID, NEW_ID)
    assert_refused(by_label, BUILD_ID_NAME, OLD_ID, NEW_ID)
    assert signed_store.cached() == []


def test_signatures_by_expired_or_revoked_keys_are_refused(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    build_id = signed_store.publish(make_fake_build(tmp_path / "build", RELEASE))
    sums = signed_store.build_dir(build_id) / SUMS_NAME
    expired, signing_time = make_expired_signing_key(signed_store.home, "old@example.invalid")
    sign_detached(signed_store.home, sums, expired, at=signing_time)
    with HostileStore(signed_store.root) as server:
        result = fetch(server.url, signed_store, "--build", build_id, "--trusted-key", expired)
        assert_refused(result, "expired key", "EXPKEYSIG")

        sign_detached(signed_store.home, sums, signed_store.key)
        revoke_key(signed_store.home, signed_store.key)
        result = fetch(server.url, signed_store, "--build", build_id)
        assert_refused(result, "revoked key", "REVKEYSIG")
    assert signed_store.cached() == []


def test_a_manifest_cached_from_an_unsigned_store_is_not_used_for_a_signed_fetch(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    build = make_fake_build(tmp_path / "build", RELEASE)
    build_id = signed_store.publish(build)
    unsigned_root = tmp_path / "unsigned-store"
    shutil.copytree(signed_store.root, unsigned_root)
    tampered_manifest(unsigned_root / RELEASE / build_id / MANIFEST_NAME)
    with HostileStore(unsigned_root) as unsigned, HostileStore(signed_store.root) as genuine:
        first = fetch(unsigned.url, signed_store, signed=False)
        assert first.returncode == 0, first.stderr
        second = fetch(genuine.url, signed_store)
    assert second.returncode == 0, second.stderr
    fetched = json.loads(second.stdout)
    assert fetched["from_cache"] is True
    # The image is shared, the manifest handed out is the one just verified.
    assert Path(fetched["manifest"]).read_bytes() == (build / MANIFEST_NAME).read_bytes()
    assert Path(fetched["manifest"]) != Path(json.loads(first.stdout)["manifest"])


def test_a_cached_manifest_is_checked_against_its_signature_when_used(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    """What update and import's smoke test read: the cached manifest, checked again."""
    signed_store.publish(make_fake_build(tmp_path / "build", RELEASE))
    with HostileStore(signed_store.root) as server:
        fetched = json.loads(fetch(server.url, signed_store).stdout)
    os.environ["GNUPGHOME"] = str(signed_store.home)
    try:
        manifest_path = Path(fetched["manifest"])
        assert read_cached_manifest(manifest_path, signed_store.key)["build_id"]
        tampered_manifest(manifest_path)
        with pytest.raises(ChecksumError, match="signed SHA256SUMS"):
            read_cached_manifest(manifest_path, signed_store.key)
    finally:
        del os.environ["GNUPGHOME"]


def test_a_signed_build_is_used_offline_only_while_its_cached_signature_holds(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    build_id = signed_store.publish(make_fake_build(tmp_path / "build", RELEASE))
    with HostileStore(signed_store.root) as server:
        fetched = json.loads(fetch(server.url, signed_store).stdout)
    down = "http://127.0.0.1:9"
    offline = fetch(down, signed_store, "--build", build_id, "--print-path")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == fetched["path"]
    tampered_manifest(Path(fetched["manifest"]))
    refused = fetch(down, signed_store, "--build", build_id)
    assert refused.returncode == 7, refused.stderr  # the store is down, the cache not usable
    assert "not usable" in refused.stderr and "signed SHA256SUMS" in refused.stderr


def test_upgrade_reads_the_target_manifest_only_as_signed(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    target = "debian-next"
    build_id = signed_store.publish(make_fake_build(tmp_path / "build", target))
    tampered_manifest(signed_store.root / target / build_id / MANIFEST_NAME)
    os.environ["GNUPGHOME"] = str(signed_store.home)
    try:
        with HostileStore(signed_store.root) as server:
            context = OnlineUpdateContext(
                name="ua-trust",
                uri="qemu:///system",
                requested_puddle="latest",
                kind="upgrade",
                target_release=target,
                target_store=server.url,
                trusted_key=signed_store.key,
            )
            with pytest.raises(ChecksumError, match="signed SHA256SUMS"):
                step_read_target_release(context)
    finally:
        del os.environ["GNUPGHOME"]
    assert context.target_manifest == {}


@pytest.mark.parametrize("command", ["update", "upgrade"])
def test_update_and_upgrade_take_a_trusted_key(command: str, signed_store: SignedStore) -> None:
    target = ["--puddle", "latest"] if command == "update" else ["--to-release", RELEASE]
    result = run_cli(
        command,
        "ua-trust-no-such-appliance",
        *target,
        "--trusted-key",
        signed_store.key,
        "--connect",
        "test:///default",
        env=signed_store.env,
        check=False,
    )
    # Past the options: the appliance does not exist (exit 5), not a usage error (2).
    assert result.returncode == 5, result.stderr
    assert "no imported appliance" in result.stderr


# -- sizes --------------------------------------------------------------------


def test_an_image_announced_larger_than_its_manifest_is_refused_unread(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    build_id = signed_store.publish(make_fake_build(tmp_path / "build", RELEASE))
    image = f"{RELEASE}/{build_id}/{IMAGE_NAME}"
    with HostileStore(signed_store.root) as server:
        server.oversized[image] = (10 * 1024**4, 64 * MIB)  # "10 TB", 64 MiB of it
        result = fetch(server.url, signed_store, "--build", build_id)
    assert_refused(result, IMAGE_NAME, str(10 * 1024**4), "image.file_size")
    print(f"10 TB announced: the server got {server.sent[image]} bytes out before the refusal")
    assert server.sent[image] < 32 * MIB
    assert signed_store.cached() == []


def test_an_endless_image_is_cut_at_its_manifest_size(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    build = make_fake_build(tmp_path / "build", RELEASE)
    build_id = signed_store.publish(build)
    size = (build / IMAGE_NAME).stat().st_size
    image = f"{RELEASE}/{build_id}/{IMAGE_NAME}"
    with HostileStore(signed_store.root) as server:
        server.oversized[image] = (None, 256 * MIB)  # no length, 256 MiB
        result = fetch(server.url, signed_store, "--build", build_id)
    assert_refused(result, IMAGE_NAME, "more than", "image.file_size")
    print(f"endless image of {size} bytes: {server.sent[image]} bytes left the server")
    assert server.sent[image] < size + 64 * MIB
    assert signed_store.cached() == []


@pytest.mark.parametrize("name", [BUILD_ID_NAME, SUMS_NAME, MANIFEST_NAME, SIGNATURE_NAME])
def test_an_oversized_small_file_is_refused_unread(
    name: str, signed_store: SignedStore, tmp_path: Path
) -> None:
    build_id = signed_store.publish(make_fake_build(tmp_path / "build", RELEASE))
    # BUILD_ID is read through the label first.
    relpath = f"{RELEASE}/{'latest' if name == BUILD_ID_NAME else build_id}/{name}"
    with HostileStore(signed_store.root) as server:
        server.oversized[relpath] = (200 * MIB, 200 * MIB)
        result = fetch(server.url, signed_store)
    assert_refused(result, name, str(200 * MIB), str(SMALL_FILE_LIMITS[name]))
    print(f"200 MiB {name}: {server.sent[relpath]} bytes left the server")
    # Below the blanket 16 MiB the reader took before per-file limits (socket buffers only).
    assert server.sent[relpath] < 12 * MIB
    assert signed_store.cached() == []


# -- https -> http ----------------------------------------------------------------


@pytest.fixture
def tls_certificate(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        skip_or_fail("openssl is not installed")
    directory = tmp_path / "tls"
    directory.mkdir()
    return make_self_signed_certificate(directory)


@pytest.mark.parametrize("name", [SHA256_NAME, SUMS_NAME, MANIFEST_NAME, IMAGE_NAME])
def test_https_to_http_redirects_are_refused(
    name: str, signed_store: SignedStore, tmp_path: Path, tls_certificate: Path
) -> None:
    build_id = signed_store.publish(make_fake_build(tmp_path / "build", RELEASE))
    relpath = f"{RELEASE}/{build_id}/{name}"
    with (
        HostileStore(signed_store.root) as plain,
        HostileStore(signed_store.root, tls_certificate) as tls,
    ):
        tls.redirects[relpath] = f"{plain.url}/{relpath}"
        # The unsigned fetch reads the .sha256 file, the signed one SHA256SUMS.
        signed = name != SHA256_NAME
        result = fetch(
            tls.url, signed_store, signed=signed, REQUESTS_CA_BUNDLE=str(tls_certificate)
        )
        assert_refused(result, "redirected from https to http", relpath)
        assert plain.sent == {}, "nothing was read over plain http"

        # The same store over https without the redirect: the CA setup works.
        del tls.redirects[relpath]
        good = fetch(tls.url, signed_store, signed=signed, REQUESTS_CA_BUNDLE=str(tls_certificate))
    assert good.returncode == 0, good.stderr


def test_redirects_within_https_and_within_http_are_followed(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    build = make_fake_build(tmp_path / "build", RELEASE)
    build_id = signed_store.publish(build)
    relpath = f"{RELEASE}/{build_id}/{IMAGE_NAME}"
    with HostileStore(signed_store.root) as plain, HostileStore(signed_store.root) as other:
        plain.redirects[relpath] = f"{other.url}/{relpath}"
        result = fetch(plain.url, signed_store, "--print-path")
    assert result.returncode == 0, result.stderr
    sha = hashlib.sha256((build / IMAGE_NAME).read_bytes()).hexdigest()
    assert Path(result.stdout.strip()).name == f"{sha}.qcow2"


def test_unsigned_builds_published_before_signed_manifests_still_fetch(
    signed_store: SignedStore, tmp_path: Path
) -> None:
    """An old build (SHA256SUMS without manifest.json) fetches without a key only."""
    build_id = signed_store.publish(make_fake_build(tmp_path / "build", RELEASE))
    build_dir = signed_store.build_dir(build_id)
    sums = build_dir / SUMS_NAME
    old_lines = [line for line in sums.read_text().splitlines() if IMAGE_NAME in line]
    sums.write_text("".join(line + "\n" for line in old_lines))
    (build_dir / SIGNATURE_NAME).unlink()
    with HostileStore(signed_store.root) as server:
        unsigned = fetch(server.url, signed_store, "--build", build_id, signed=False)
        assert unsigned.returncode == 0, unsigned.stderr
        sign_detached(signed_store.home, sums, signed_store.key)
        signed = fetch(server.url, signed_store, "--build", build_id)
    assert_refused(signed, "does not list", MANIFEST_NAME)
