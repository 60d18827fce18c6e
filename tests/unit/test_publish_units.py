"""Unit tests for publish: one-pass digests, checksum files, store URLs and
credentials, the file:// store's labels and lock."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from publish.promotion import check_promotable_label
from undercloud_appliance.checksum_files import checksum_line, parse_sums, render_sums
from undercloud_appliance.errors import ApplianceError, ChecksumError, StoreError
from undercloud_appliance.stores import default_store_url, open_store
from undercloud_appliance.stores import digests as digests_module
from undercloud_appliance.stores.credentials import redact_url, store_credentials
from undercloud_appliance.stores.digests import copy_with_digests
from undercloud_appliance.stores.file import FileStore


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=50_000), chunk=st.integers(min_value=1, max_value=9_000))
def test_copy_with_digests_matches_hashlib(data: bytes, chunk: int) -> None:
    original = digests_module.CHUNK_SIZE
    digests_module.CHUNK_SIZE = chunk  # many chunk boundaries on small data
    try:
        sink = io.BytesIO()
        result = copy_with_digests(io.BytesIO(data), sink.write)
    finally:
        digests_module.CHUNK_SIZE = original
    assert sink.getvalue() == data
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.md5 == hashlib.md5(data).hexdigest()


def test_copy_with_digests_stops_threads_when_write_fails() -> None:
    def failing_write(chunk: bytes) -> None:
        raise OSError(28, "No space left on device")

    before = threading.active_count()
    with pytest.raises(OSError):
        copy_with_digests(io.BytesIO(b"x" * 100), failing_write)
    assert threading.active_count() == before


def test_checksum_files_are_what_coreutils_checks(tmp_path: Path) -> None:
    (tmp_path / "undercloud.qcow2").write_bytes(b"image")
    (tmp_path / "BUILD_ID").write_bytes(b"id\n")
    sums = render_sums(
        {
            "undercloud.qcow2": hashlib.sha256(b"image").hexdigest(),
            "BUILD_ID": hashlib.sha256(b"id\n").hexdigest(),
        }
    )
    (tmp_path / "SHA256SUMS").write_text(sums)
    (tmp_path / "x.md5").write_text(
        checksum_line(hashlib.md5(b"image").hexdigest(), "undercloud.qcow2")
    )
    subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=tmp_path, check=True, capture_output=True
    )
    subprocess.run(
        ["md5sum", "--strict", "-c", "x.md5"], cwd=tmp_path, check=True, capture_output=True
    )
    assert "/" not in sums
    assert parse_sums(sums, "SHA256SUMS")["BUILD_ID"] == hashlib.sha256(b"id\n").hexdigest()
    # A wrong byte makes the real tool fail: the check above is not vacuous.
    (tmp_path / "undercloud.qcow2").write_bytes(b"imagE")
    failed = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True)
    assert failed.returncode != 0


@pytest.mark.parametrize(
    "text",
    ["", "zz  undercloud.qcow2\n", f"{'a' * 64}  /abs/undercloud.qcow2\n", f"{'a' * 63}  x\n"],
)
def test_parse_sums_rejects_malformed(text: str) -> None:
    with pytest.raises(ChecksumError, match="SHA256SUMS"):
        parse_sums(text, "SHA256SUMS")


def test_checksum_line_refuses_paths() -> None:
    with pytest.raises(ValueError):
        checksum_line("a" * 64, "dir/undercloud.qcow2")


def test_redact_url_hides_password_only() -> None:
    assert redact_url("https://bob:pw@host:8443/store/") == "https://bob@host:8443/store/"
    assert redact_url("https://host/store/") == "https://host/store/"
    assert "pw" not in redact_url("http://u:pw@[::1]:80/x")


def test_store_credentials_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.test login nuser password npass\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.delenv("UNDERCLOUD_APPLIANCE_STORE_USER", raising=False)
    monkeypatch.delenv("UNDERCLOUD_APPLIANCE_STORE_PASSWORD", raising=False)
    assert store_credentials("https://example.test/s") == ("nuser", "npass")
    assert store_credentials("https://u:p@example.test/s") == ("u", "p")
    assert store_credentials("https://other.test/s") is None
    monkeypatch.setenv("UNDERCLOUD_APPLIANCE_STORE_USER", "eu")
    monkeypatch.setenv("UNDERCLOUD_APPLIANCE_STORE_PASSWORD", "ep")
    assert store_credentials("https://u:p@example.test/s") == ("eu", "ep")


@pytest.mark.parametrize(
    "url", ["ftp://h/x", "s3://bucket/x", "/plain/path", "file://host/x", "file:relative"]
)
def test_open_store_refuses_unknown_urls(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def test_default_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNDERCLOUD_APPLIANCE_STORE", "https://store.example/x/")
    assert default_store_url() == "https://store.example/x/"
    monkeypatch.delenv("UNDERCLOUD_APPLIANCE_STORE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_url() == f"file://{tmp_path}/.local/share/undercloud-appliance/store"


@pytest.mark.parametrize("label", ["a/b", "..", "previous-x", "X", "1abc", ""])
def test_label_names(label: str) -> None:
    with pytest.raises(ApplianceError):
        check_promotable_label(label)


def test_file_store_label_is_relative_symlink_with_previous(tmp_path: Path) -> None:
    store = FileStore(tmp_path, f"file://{tmp_path}")
    for build_id in ("20260101T000000Z-000001", "20260102T000000Z-000002"):
        (tmp_path / "rel" / build_id).mkdir(parents=True)
    assert store.point_label("rel", "current", "20260101T000000Z-000001") is None
    assert os.readlink(tmp_path / "rel" / "current") == "20260101T000000Z-000001"
    assert (
        store.point_label("rel", "current", "20260102T000000Z-000002") == "20260101T000000Z-000001"
    )
    assert os.readlink(tmp_path / "rel" / "current") == "20260102T000000Z-000002"
    assert os.readlink(tmp_path / "rel" / "previous-current") == "20260101T000000Z-000001"
    # Re-pointing at the same build keeps previous-current as it was.
    store.point_label("rel", "current", "20260102T000000Z-000002")
    assert os.readlink(tmp_path / "rel" / "previous-current") == "20260101T000000Z-000001"
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == [
        "20260101T000000Z-000001",
        "20260102T000000Z-000002",
        "current",
        "previous-current",
    ]


def test_file_store_commit_never_replaces_a_build(tmp_path: Path) -> None:
    store = FileStore(tmp_path, f"file://{tmp_path}")
    final = tmp_path / "rel" / "20260101T000000Z-000001"
    final.mkdir(parents=True)
    (final / "BUILD_ID").write_text("old\n")
    staging = store.make_staging_directory("rel", final.name)
    (tmp_path / staging / "BUILD_ID").write_text("new\n")
    with pytest.raises(StoreError, match="already exists"):
        store.commit_directory(staging, f"rel/{final.name}")
    assert (final / "BUILD_ID").read_text() == "old\n"


def test_file_store_lock_serialises(tmp_path: Path) -> None:
    store = FileStore(tmp_path, f"file://{tmp_path}")
    events: list[str] = []

    def hold(name: str) -> None:
        with store.lock("rel"):
            events.append(f"{name}-in")
            time.sleep(0.2)
            events.append(f"{name}-out")

    threads = [threading.Thread(target=hold, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # No interleaving: each holder leaves before the other enters.
    assert events in (["a-in", "a-out", "b-in", "b-out"], ["b-in", "b-out", "a-in", "a-out"])
