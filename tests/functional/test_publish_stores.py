"""publish, promote, prune and list against real stores: a local directory,
nginx with WebDAV, and sshd with rsync, all started by the tests on 127.0.0.1.

Every published directory is checked with the real ``sha256sum -c`` and
``md5sum -c`` in the directory the server serves from, and labels are
fetched by a plain HTTP client (requests / curl) without this tool.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import run_cli
from tests.support.fake_build import make_fake_build
from tests.support.gpg_keys import gnupg_env, make_signing_key
from tests.support.nginx import NginxServer
from tests.support.sshd import SshServer
from undercloud_appliance.manifest import new_build_id
from undercloud_appliance.store_layout import (
    BUILD_ID_NAME,
    IMAGE_NAME,
    MD5_NAME,
    PROMOTIONS_NAME,
    SHA256_NAME,
    SIGNATURE_NAME,
    SIGNED_NAMES,
    SUMS_NAME,
    VERIFICATION_NAME,
)

RELEASE = "debian-ci"


@dataclass
class StoreUnderTest:
    """A store URL plus the directory on disk where its server keeps the files."""

    kind: str
    url: str
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    http_url: str | None = None  # where a plain HTTP client reads the same tree

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_cli(*args, "--store", self.url, check=check, env={**os.environ, **self.env})


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with SshServer() as server:
        yield server


@pytest.fixture(params=["file", "webdav", "ssh"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    root = tmp_path / "store"
    root.mkdir()
    if request.param == "file":
        # nginx serves the same tree to show plain HTTP clients follow labels.
        with NginxServer(root) as http:
            yield StoreUnderTest("file", f"file://{root}", root, http_url=http.url)
    elif request.param == "webdav":
        with NginxServer(root, dav=True, auth=("publisher", "s3cret-pw")) as http:
            yield StoreUnderTest(
                "webdav",
                f"{http.url}/",
                root,
                env={
                    "UNDERCLOUD_APPLIANCE_STORE_USER": "publisher",
                    "UNDERCLOUD_APPLIANCE_STORE_PASSWORD": "s3cret-pw",
                },
                http_url=None,  # needs auth; checked with requests below
            )
    else:
        server: SshServer = request.getfixturevalue("sshd")
        with NginxServer(root) as http:
            yield StoreUnderTest(
                "ssh",
                server.url(root),
                root,
                env={"UNDERCLOUD_APPLIANCE_SSH_COMMAND": server.ssh_command},
                http_url=http.url,
            )


@pytest.fixture
def builds(tmp_path: Path) -> list[Path]:
    """Three builds of one release, oldest first."""
    return [
        make_fake_build(tmp_path / f"build-{n}", RELEASE, build_id=f"2026112{n}T040000Z-00000{n}")
        for n in range(1, 4)
    ]


def build_id_of(build: Path) -> str:
    return json.loads((build / "manifest.json").read_text())["build_id"]


def check_with_coreutils(directory: Path) -> None:
    """What a user does after a download: the real sha256sum and md5sum."""
    for command in (
        ["sha256sum", "-c", SUMS_NAME],
        ["sha256sum", "-c", SHA256_NAME],
        ["md5sum", "-c", MD5_NAME],
    ):
        result = subprocess.run(command, cwd=directory, capture_output=True, text=True)
        assert result.returncode == 0, f"{command} in {directory}: {result.stdout}{result.stderr}"
        assert "OK" in result.stdout


def test_publish_promote_prune_list(store: StoreUnderTest, builds: list[Path]) -> None:
    ids = [build_id_of(build) for build in builds]
    for build in builds:
        store.cli("publish", str(build))
    for build_id in ids:
        published = store.root / RELEASE / build_id
        assert sorted(p.name for p in published.iterdir()) == sorted(
            ["BUILD_ID", "SHA256SUMS", "manifest.json", IMAGE_NAME, MD5_NAME, SHA256_NAME]
        )
        check_with_coreutils(published)
        # SHA256SUMS (what a signature covers) lists all the importer trusts.
        listed = [line.split()[1] for line in (published / SUMS_NAME).read_text().splitlines()]
        assert sorted(listed) == sorted(SIGNED_NAMES)
        assert (published / BUILD_ID_NAME).read_text() == f"{build_id}\n"
        assert (published / IMAGE_NAME).read_bytes() == (
            builds[ids.index(build_id)] / IMAGE_NAME
        ).read_bytes()
    # No staging leftovers after success.
    hidden = [p.name for p in (store.root / RELEASE).iterdir() if p.name.startswith(".")]
    assert hidden == [".staging"]
    assert list((store.root / RELEASE / ".staging").iterdir()) == []

    store.cli("promote", RELEASE, ids[0], "--label", "current")
    store.cli("promote", RELEASE, ids[1], "--label", "current")
    label = store.root / RELEASE / "current"
    previous = store.root / RELEASE / "previous-current"
    assert (label / BUILD_ID_NAME).read_text().strip() == ids[1]
    assert (previous / BUILD_ID_NAME).read_text().strip() == ids[0]
    check_with_coreutils(label)
    check_with_coreutils(previous)

    # A plain HTTP client needs nothing but the stable URL.
    if store.http_url:
        base = f"{store.http_url}/{RELEASE}/current"
        assert requests.get(f"{base}/{BUILD_ID_NAME}").text.strip() == ids[1]
        image = requests.get(f"{base}/{IMAGE_NAME}")
        assert image.status_code == 200
        assert image.content == (builds[1] / IMAGE_NAME).read_bytes()
        ranged = requests.get(f"{base}/{IMAGE_NAME}", headers={"Range": "bytes=0-3"})
        assert ranged.status_code == 206 and ranged.content == b"QFI\xfb"

    listing = json.loads(store.cli("list", "--json").stdout)
    (release,) = listing["releases"]
    assert release["release"] == RELEASE
    assert release["labels"] == {"current": ids[1], "previous-current": ids[0]}
    assert [b["build_id"] for b in release["builds"]] == list(reversed(ids))
    newest = release["builds"][0]
    assert newest["size"] == (builds[2] / IMAGE_NAME).stat().st_size
    assert newest["puddle"] == "2026-11-21.1"
    text = store.cli("list", RELEASE).stdout
    assert "current -> " + ids[1] in text and "puddle=2026-11-21.1" in text

    # keep 1: the newest stays; the two older ones are labelled, so they stay too.
    store.cli("prune", RELEASE, "--keep", "1")
    assert all((store.root / RELEASE / build_id).is_dir() for build_id in ids)
    # Move the label forward twice: ids[0] loses both labels and is pruned.
    store.cli("promote", RELEASE, ids[2], "--label", "current")
    result = store.cli("prune", RELEASE, "--keep", "0")
    assert f"deleted {RELEASE}/{ids[0]}" in result.stdout
    assert not (store.root / RELEASE / ids[0]).exists()
    assert (store.root / RELEASE / ids[1]).is_dir()  # previous-current
    assert (store.root / RELEASE / ids[2]).is_dir()  # current
    check_with_coreutils(store.root / RELEASE / "current")


def test_signed_publish_verifies_with_gpg(store: StoreUnderTest, tmp_path: Path) -> None:
    gnupghome = tmp_path / "gnupg"
    gnupghome.mkdir(mode=0o700)
    env = gnupg_env(gnupghome)
    make_signing_key(gnupghome, "test-signer@example.invalid")
    build = make_fake_build(tmp_path / "build", RELEASE)
    store.env["GNUPGHOME"] = str(gnupghome)
    store.cli("publish", str(build), "--sign-key", "test-signer@example.invalid")
    published = store.root / RELEASE / build_id_of(build)
    verify = subprocess.run(
        ["gpg", "--batch", "--verify", SIGNATURE_NAME, SUMS_NAME],
        cwd=published,
        env=env,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    assert "Good signature" in verify.stderr
    # A changed SHA256SUMS must not verify: the check above can fail.
    (tmp_path / "tampered").write_bytes((published / SUMS_NAME).read_bytes() + b"\n")
    tampered = subprocess.run(
        ["gpg", "--batch", "--verify", str(published / SIGNATURE_NAME), str(tmp_path / "tampered")],
        env=env,
        capture_output=True,
    )
    assert tampered.returncode != 0


def test_promote_refuses_corrupted_build(store: StoreUnderTest, builds: list[Path]) -> None:
    build_id = build_id_of(builds[0])
    store.cli("publish", str(builds[0]))
    image = store.root / RELEASE / build_id / IMAGE_NAME
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(bytes(data))
    result = store.cli("promote", RELEASE, build_id, "--label", "current", check=False)
    assert result.returncode != 0
    assert "sha256" in result.stderr and "Traceback" not in result.stderr
    assert not (store.root / RELEASE / "current").exists()


def test_promote_refuses_incomplete_build(store: StoreUnderTest, builds: list[Path]) -> None:
    build_id = build_id_of(builds[0])
    store.cli("publish", str(builds[0]))
    (store.root / RELEASE / build_id / MD5_NAME).unlink()
    result = store.cli("promote", RELEASE, build_id, "--label", "current", check=False)
    assert result.returncode != 0
    assert MD5_NAME in result.stderr
    assert not (store.root / RELEASE / "current").exists()


def test_smoke_failure_blocks_promotion_unless_forced(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    build = make_fake_build(tmp_path / "build", RELEASE, smoke_passed=False)
    build_id = build_id_of(build)
    store.cli("publish", str(build))
    refused = store.cli("promote", RELEASE, build_id, "--label", "current", check=False)
    assert refused.returncode != 0 and "smoke" in refused.stderr
    assert not (store.root / RELEASE / "current").exists()

    forced = store.cli("promote", RELEASE, build_id, "--label", "current", "--force")
    assert "smoke" in forced.stderr  # logged
    promotions = json.loads((store.root / RELEASE / build_id / PROMOTIONS_NAME).read_text())
    (promotion,) = promotions
    assert promotion["label"] == "current" and promotion["forced"] is True
    # The label shows the record; the signed manifest is unchanged, so the
    # checksum files still verify.
    label_record = json.loads((store.root / RELEASE / "current" / PROMOTIONS_NAME).read_text())
    assert label_record == promotions
    assert (store.root / RELEASE / build_id / "manifest.json").read_bytes() == (
        build / "manifest.json"
    ).read_bytes()
    check_with_coreutils(store.root / RELEASE / "current")


def test_build_without_smoke_result_is_not_promoted_unless_forced(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    # A --no-bake build records no smoke test: nothing shows that it works.
    build = make_fake_build(tmp_path / "build", RELEASE, smoke_passed=None)
    build_id = build_id_of(build)
    store.cli("publish", str(build))
    refused = store.cli("promote", RELEASE, build_id, "--label", "current", check=False)
    assert refused.returncode == 1, refused.stderr
    (error,) = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert "no smoke test is recorded" in error and "--force" in error
    assert not (store.root / RELEASE / "current").exists()

    forced = store.cli("promote", RELEASE, build_id, "--label", "current", "--force")
    assert "no smoke test is recorded" in forced.stderr  # logged
    (promotion,) = json.loads((store.root / RELEASE / "current" / PROMOTIONS_NAME).read_text())
    assert promotion["forced"] is True and "no smoke test" in promotion["reason"]
    check_with_coreutils(store.root / RELEASE / "current")


def test_a_verification_recorded_on_the_store_lets_its_image_be_promoted(
    store: StoreUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``verify --store``'s record (``VERIFICATION.json``), written through each backend.

    The boot itself is tests/functional/test_verify_published.py's; here the
    record is what promote reads: a pass for this image's sha256 only.
    """
    from publish.promotion import record_verification
    from undercloud_appliance.stores import open_store

    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    build = make_fake_build(tmp_path / "build", RELEASE, smoke_passed=None)
    build_id = build_id_of(build)
    store.cli("publish", str(build))
    passed = {"passed": True, "stage": "verify", "results": []}
    failed = {"passed": False, "stage": "verify", "results": []}

    def record(smoke: dict, image_sha256: str | None = None) -> None:
        backend = open_store(store.url)
        try:
            record_verification(backend, RELEASE, build_id, smoke)
        finally:
            backend.close()
        if image_sha256 is not None:  # as if recorded for other bytes
            path = store.root / RELEASE / build_id / VERIFICATION_NAME
            path.write_text(
                json.dumps({**json.loads(path.read_text()), "image_sha256": image_sha256})
            )

    def promote() -> subprocess.CompletedProcess:
        return store.cli("promote", RELEASE, build_id, "--label", "stable", check=False)

    record(failed)
    assert "no smoke test is recorded" in promote().stderr
    record(passed, image_sha256="0" * 64)
    refused = promote()
    assert refused.returncode == 1 and "names another image" in refused.stderr
    record(passed)
    promoted = promote()
    assert promoted.returncode == 0, promoted.stderr
    assert f"build {build_id}: verified on the store" in promoted.stderr
    assert (store.root / RELEASE / "stable" / BUILD_ID_NAME).read_text().strip() == build_id
    assert not (store.root / RELEASE / build_id / PROMOTIONS_NAME).exists(), "not forced"


def test_passed_smoke_promotes(store: StoreUnderTest, tmp_path: Path) -> None:
    build = make_fake_build(tmp_path / "build", RELEASE, smoke_passed=True)
    store.cli("publish", str(build))
    store.cli("promote", RELEASE, build_id_of(build), "--label", "stable")
    assert not (store.root / RELEASE / "stable" / PROMOTIONS_NAME).exists()


def stored_files(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Each file of a published build: mtime and content (a no-op changes neither)."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.iterdir()}


def test_republishing_and_repromoting_are_no_ops_other_content_is_refused(
    store: StoreUnderTest, builds: list[Path], tmp_path: Path
) -> None:
    build_id = build_id_of(builds[0])
    first = store.cli("publish", str(builds[0]))
    store.cli("promote", RELEASE, build_id, "--label", "current")
    published = store.root / RELEASE / build_id
    before = stored_files(published)

    again = store.cli("publish", str(builds[0]))
    assert again.stdout == first.stdout, "the build's place in the store, as the first time"
    (no_op,) = [line for line in again.stderr.splitlines() if "already published" in line]
    assert f"build {build_id} already published, identical" in no_op
    assert "upload-image" not in again.stderr, "nothing is uploaded"
    assert stored_files(published) == before

    promoted = store.cli("promote", RELEASE, build_id, "--label", "current")
    assert promoted.stdout.strip() == f"{RELEASE}/current -> {build_id} (already: nothing changed)"
    assert "already points at" in promoted.stderr and "verifying" not in promoted.stderr
    assert not (store.root / RELEASE / "previous-current").exists()

    # Another build (another image and manifest) that claims the same id.
    other = make_fake_build(tmp_path / "other", RELEASE, build_id=build_id)
    refused = store.cli("publish", str(other), check=False)
    assert refused.returncode == 1, refused.stderr
    (error,) = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert f"build {build_id} is already published with other content" in error
    assert "undercloud.qcow2, manifest.json differ" in error and "nothing published" in error
    assert stored_files(published) == before
    check_with_coreutils(published)


def test_concurrent_publishes_and_promotions(store: StoreUnderTest, tmp_path: Path) -> None:
    """Two publishes at once both succeed; two promotions of one label serialise."""
    image_source = make_fake_build(tmp_path / "source", RELEASE, data_mib=8) / IMAGE_NAME
    builds = [
        make_fake_build(
            tmp_path / f"b{n}", RELEASE, build_id=new_build_id(), image_from=image_source
        )
        for n in range(2)
    ]
    env = {**os.environ, **store.env}
    import sys

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "undercloud_appliance_cli", *args, "--store", store.url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    publishes = [start("publish", str(build)) for build in builds]
    for process in publishes:
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    ids = [build_id_of(build) for build in builds]
    promotions = [start("promote", RELEASE, build_id, "--label", "current") for build_id in ids]
    outputs = [process.communicate(timeout=120) for process in promotions]
    assert all(process.returncode == 0 for process in promotions), outputs
    current = (store.root / RELEASE / "current" / BUILD_ID_NAME).read_text().strip()
    previous = (store.root / RELEASE / "previous-current" / BUILD_ID_NAME).read_text().strip()
    # Serialised: one promotion saw the other's result as its "previous".
    assert {current, previous} == set(ids)
    check_with_coreutils(store.root / RELEASE / "current")


def test_prune_removes_only_stale_leftovers(store: StoreUnderTest, builds: list[Path]) -> None:
    store.cli("publish", str(builds[0]))
    release_dir = store.root / RELEASE
    staging = release_dir / ".staging"
    old = staging / "20200101T000000Z-aaaaaa.tmp-00000001"
    fresh = staging / "20261122T000000Z-bbbbbb.tmp-00000002"
    label_copy = staging / "current.tmp-00000003"
    for leftover in (old, fresh, label_copy):
        leftover.mkdir()
        (leftover / IMAGE_NAME).write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    store.cli("prune", RELEASE, "--keep", "5")
    assert not old.exists()
    assert not label_copy.exists()
    assert fresh.is_dir()  # may belong to a publish still running
    assert (release_dir / build_id_of(builds[0])).is_dir()
