"""``undercloud-appliance fetch`` against real HTTP servers and file:// stores.

A small Python HTTP server (below) serves the store with ``Range`` and
``If-Range`` like nginx does, counts the bytes it sends, and can cut a
response after N bytes or change its ETag: that is how an interrupted
download and a file changed on the server are produced.  One test also runs
against nginx itself, and one against an ssh:// store served by sshd.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import run_cli
from tests.support.fake_build import make_fake_build
from tests.support.gpg_keys import gnupg_env, make_signing_key, stop_gpg_agent
from tests.support.nginx import NginxServer
from tests.support.requirements import skip_or_fail
from tests.support.sshd import SshServer
from tests.support.store_tree import image_relpath, lay_out_build

MIB = 1024 * 1024
IMAGE_MIB = 24


class StoreHandler(http.server.BaseHTTPRequestHandler):
    server: StoreServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        store = self.server
        path = self.path.split("?")[0]
        if path.startswith("/moved/"):
            self.send_response(301)
            self.send_header("Location", path.removeprefix("/moved"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if store.unavailable_times > 0:
            store.unavailable_times -= 1
            store.requests.append((path, "503", None))
            self.send_error(503)
            return
        file = store.root / path.lstrip("/")
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        etag = f'"{store.etag_version}-{len(data)}"'
        start = 0
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        store.requests.append((path, range_header, if_range))
        if range_header and (if_range is None or if_range == etag):
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", etag)
        self.end_headers()
        if not body:
            return
        payload = data[start:]
        cut = store.cut_after if path.endswith(".qcow2") else None
        if cut is not None:
            payload = payload[:cut]
        try:
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        store.sent[path] = store.sent.get(path, 0) + len(payload)
        if cut is not None:
            if store.cut_times is not None:
                store.cut_times -= 1
                if store.cut_times <= 0:
                    store.cut_after = None
            self.close_connection = True


class StoreServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), StoreHandler)
        self.root = root
        self.etag_version = 1
        self.cut_after: int | None = None
        self.cut_times: int | None = None
        self.unavailable_times = 0  # answer this many requests with 503 first
        self.sent: dict[str, int] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def image_bytes_sent(self) -> int:
        return sum(count for path, count in self.sent.items() if path.endswith(".qcow2"))

    def reset_counters(self) -> None:
        self.sent.clear()
        self.requests.clear()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """A store with one fake build (random 24 MiB qcow2): (root, release, build id, sha)."""
    base = tmp_path_factory.mktemp("fetch-store")
    build = make_fake_build(base / "build", data_mib=IMAGE_MIB)
    release, build_id = lay_out_build(base / "store", build)
    sha = json.loads((build / "manifest.json").read_text())["image"]["sha256"]
    return base / "store", release, build_id, sha


@pytest.fixture
def server(published: tuple[Path, str, str, str]) -> Iterator[StoreServer]:
    store = StoreServer(published[0])
    thread = threading.Thread(target=store.serve_forever, daemon=True)
    thread.start()
    try:
        yield store
    finally:
        store.shutdown()
        store.server_close()


@pytest.fixture
def cache_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache")}


def fetch(url: str, release: str, env: dict[str, str], *extra: str, check: bool = True):
    return run_cli("fetch", url, "--release", release, *extra, env=env, check=check)


def cache_files(env: dict[str, str]) -> list[str]:
    root = Path(env["UNDERCLOUD_APPLIANCE_CACHE"])
    return sorted(path.name for path in root.glob("*")) if root.exists() else []


def test_fetch_verifies_caches_and_second_fetch_downloads_nothing(
    server: StoreServer, published, cache_env
) -> None:
    _root, release, build_id, sha = published
    first = json.loads(fetch(server.url, release, cache_env).stdout)
    size = Path(first["path"]).stat().st_size
    assert first["build_id"] == build_id and first["sha256"] == sha
    assert first["from_cache"] is False and first["transferred_bytes"] == size
    assert first["path"].endswith(f"/{sha}.qcow2")
    assert hashlib.sha256(Path(first["path"]).read_bytes()).hexdigest() == sha
    assert not os.access(first["path"], os.W_OK) or os.geteuid() == 0
    assert Path(first["path"]).stat().st_mode & 0o222 == 0, "cached image must be read-only"

    server.reset_counters()
    second = fetch(server.url, release, cache_env, "--print-path")
    assert second.stdout == f"{first['path']}\n"
    assert server.image_bytes_sent() == 0
    metadata_bytes = sum(server.sent.values())
    print(f"second fetch: {metadata_bytes} bytes of metadata for a {size}-byte image")
    assert metadata_bytes < size / 100


def test_interrupted_fetch_resumes_with_only_the_rest(
    server: StoreServer, published, cache_env
) -> None:
    _root, release, build_id, sha = published
    size = (published[0] / image_relpath(release, build_id)).stat().st_size
    cut = size * 2 // 5
    server.cut_after = cut
    env = {**cache_env, "UNDERCLOUD_APPLIANCE_FETCH_ATTEMPTS": "1"}
    interrupted = fetch(server.url, release, env, "--build", build_id, check=False)
    assert interrupted.returncode == 7, interrupted.stderr
    assert interrupted.stderr.count("error:") == 1
    assert f"{sha}.partial" in cache_files(env)
    assert f"{sha}.qcow2" not in cache_files(env), "a partial must never get the final name"

    server.cut_after = None
    server.reset_counters()
    resumed = json.loads(fetch(server.url, release, env, "--build", build_id).stdout)
    rest = server.image_bytes_sent()
    print(f"resume: {rest} of {size} bytes transferred after a cut at {cut}")
    kept = resumed["resumed_from"]
    # At most the last unwritten chunk (1 MiB) of the cut response is fetched again.
    assert cut - MIB < kept <= cut
    assert rest == size - kept
    image_requests = [r for r in server.requests if r[0].endswith(".qcow2")]
    assert image_requests == [(image_requests[0][0], f"bytes={kept}-", f'"1-{size}"')]
    assert hashlib.sha256(Path(resumed["path"]).read_bytes()).hexdigest() == sha
    assert cache_files(env) == sorted(["builds", "manifests", f"{sha}.lock", f"{sha}.qcow2"])

    server.reset_counters()
    fetch(server.url, release, env, "--build", build_id)
    print(f"third fetch: {sum(server.sent.values())} bytes")
    assert sum(server.sent.values()) < size / 100


def test_store_password_stays_out_of_messages_and_cache_files(
    server: StoreServer, published, cache_env
) -> None:
    """``http://user:password@store``: no message shows the password, no file keeps it readable."""
    _root, release, build_id, sha = published
    url = server.url.replace("http://", "http://reader:s3cret@")
    size = (published[0] / image_relpath(release, build_id)).stat().st_size
    server.cut_after = size // 3
    env = {**cache_env, "UNDERCLOUD_APPLIANCE_FETCH_ATTEMPTS": "1"}
    interrupted = fetch(url, release, env, "--build", build_id, check=False)
    assert interrupted.returncode == 7, interrupted.stderr
    assert "reader@127.0.0.1" in interrupted.stderr
    cache = Path(env["UNDERCLOUD_APPLIANCE_CACHE"])
    resume_state = cache / f"{sha}.partial.json"
    assert resume_state.stat().st_mode & 0o777 == 0o600

    server.cut_after = None
    fetched = fetch(url, release, env, "--build", build_id)
    (manifest,) = (cache / "manifests").glob("*.json")  # named by the manifest's sha256
    assert manifest.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in interrupted.stderr + fetched.stdout + fetched.stderr
    for path in cache.rglob("*"):
        if path.is_file() and path.suffix != ".qcow2":
            assert b"s3cret" not in path.read_bytes(), path


def test_retries_resume_within_one_fetch(server: StoreServer, published, cache_env) -> None:
    _root, release, build_id, _sha = published
    size = (published[0] / image_relpath(release, build_id)).stat().st_size
    server.cut_after, server.cut_times = size // 3, 2
    result = json.loads(fetch(server.url, release, cache_env).stdout)
    print(f"two cuts, retried: {server.image_bytes_sent()} bytes for a {size}-byte image")
    # Each cut costs at most the chunk (1 MiB) that was in flight; never a restart.
    assert size <= server.image_bytes_sent() <= size + 2 * MIB
    assert size <= result["transferred_bytes"] <= server.image_bytes_sent()
    assert len([r for r in server.requests if r[0].endswith(".qcow2")]) == 3


def test_file_changed_on_server_restarts_from_zero(
    server: StoreServer, published, cache_env
) -> None:
    _root, release, build_id, sha = published
    size = (published[0] / image_relpath(release, build_id)).stat().st_size
    server.cut_after = size // 2
    env = {**cache_env, "UNDERCLOUD_APPLIANCE_FETCH_ATTEMPTS": "1"}
    assert fetch(server.url, release, env, check=False).returncode == 7

    server.cut_after = None
    server.etag_version = 2  # the server's file changed: If-Range no longer matches
    server.reset_counters()
    result = json.loads(fetch(server.url, release, env).stdout)
    print(f"changed ETag: {server.image_bytes_sent()} of {size} bytes transferred")
    assert server.image_bytes_sent() == size
    assert result["resumed_from"] == 0
    assert hashlib.sha256(Path(result["path"]).read_bytes()).hexdigest() == sha


def test_corrupted_image_is_a_checksum_error_and_nothing_is_cached(
    tmp_path: Path, cache_env
) -> None:
    build = make_fake_build(tmp_path / "build", data_mib=4)
    release, build_id = lay_out_build(tmp_path / "store", build)
    published_image = tmp_path / "store" / image_relpath(release, build_id)
    published_image.unlink()  # it was hard-linked to the build's image
    shutil.copyfile(build / "undercloud.qcow2", published_image)
    with published_image.open("r+b") as handle:
        handle.seek(1 * MIB + 17)
        byte = handle.read(1)
        handle.seek(1 * MIB + 17)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with NginxServer(tmp_path / "store") as nginx:
        result = fetch(nginx.url, release, cache_env, "--build", build_id, check=False)
    assert result.returncode == 6, result.stderr
    assert result.stderr.strip().count("\n") == 0 or "error:" in result.stderr.splitlines()[-1]
    assert "sha256" in result.stderr.splitlines()[-1]
    leftovers = [name for name in cache_files(cache_env) if name.endswith((".qcow2", ".partial"))]
    assert leftovers == []


def test_fetch_over_nginx_follows_redirects_and_file_store(
    server: StoreServer, published, cache_env, tmp_path: Path
) -> None:
    root, release, _build_id, sha = published
    moved = json.loads(fetch(f"{server.url}/moved", release, cache_env).stdout)
    assert moved["sha256"] == sha and moved["from_cache"] is False

    with NginxServer(root) as nginx:
        cached = json.loads(fetch(nginx.url, release, cache_env).stdout)
    assert cached["from_cache"] is True and cached["transferred_bytes"] == 0

    file_env = {**cache_env, "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "file-cache")}
    local = fetch(f"file://{root}", release, file_env, "--print-path").stdout.strip()
    assert Path(local).name == f"{sha}.qcow2"
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == sha


@pytest.fixture
def gnupg_home(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    if shutil.which("gpg") is None:
        skip_or_fail("gpg is not installed (scripts/host-packages.txt: gnupg)")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = gnupg_env(home)
    fingerprint = make_signing_key(home, "store@example.invalid", expires="never")
    try:
        yield env, fingerprint
    finally:
        stop_gpg_agent(home)


def test_signed_sums_are_checked_against_the_trusted_key(
    tmp_path: Path, gnupg_home: tuple[dict[str, str], str]
) -> None:
    env, fingerprint = gnupg_home
    env = {**env, "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache")}
    build = make_fake_build(tmp_path / "build", data_mib=2)
    release, build_id = lay_out_build(tmp_path / "store", build)
    build_dir = tmp_path / "store" / release / build_id
    store_url = f"file://{tmp_path / 'store'}"

    unsigned = fetch(
        store_url, release, env, "--build", build_id, "--trusted-key", fingerprint, check=False
    )
    assert unsigned.returncode == 6 and "no SHA256SUMS.sig" in unsigned.stderr

    subprocess.run(
        [
            "gpg",
            "--batch",
            "--yes",
            "--detach-sign",
            "-o",
            str(build_dir / "SHA256SUMS.sig"),
            str(build_dir / "SHA256SUMS"),
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    other = "0123456789ABCDEF0123456789ABCDEF01234567"
    wrong_key = fetch(
        store_url, release, env, "--build", build_id, "--trusted-key", other, check=False
    )
    assert wrong_key.returncode == 6 and "not a valid signature" in wrong_key.stderr
    assert cache_files(env) == [] or all(not n.endswith(".qcow2") for n in cache_files(env))

    good = fetch(
        store_url,
        release,
        {**env, "UNDERCLOUD_APPLIANCE_TRUSTED_KEY": fingerprint},
        "--build",
        build_id,
    )
    assert json.loads(good.stdout)["build_id"] == build_id

    (build_dir / "SHA256SUMS").write_text((build_dir / "SHA256SUMS").read_text() + "\n")
    tampered = fetch(
        store_url, release, env, "--build", build_id, "--trusted-key", fingerprint, check=False
    )
    assert tampered.returncode == 6


def test_known_build_is_used_from_the_cache_when_the_store_is_down(
    server: StoreServer, published, cache_env
) -> None:
    _root, release, build_id, sha = published
    path = fetch(server.url, release, cache_env, "--print-path").stdout.strip()
    offline = fetch("http://127.0.0.1:9", release, cache_env, "--build", build_id, "--print-path")
    assert offline.stdout.strip() == path and path.endswith(f"{sha}.qcow2")
    assert "using build" in offline.stderr
    unknown = fetch("http://127.0.0.1:9", release, cache_env, check=False)
    assert unknown.returncode == 7, "a label cannot be resolved without the store"


def test_transient_server_errors_are_retried(server: StoreServer, published, cache_env) -> None:
    _root, release, build_id, _sha = published
    server.unavailable_times = 2
    result = json.loads(fetch(server.url, release, cache_env).stdout)
    assert result["build_id"] == build_id
    assert [r[1] for r in server.requests[:3]] == ["503", "503", None]


def test_resume_against_nginx_uses_its_etag(published, cache_env) -> None:
    """A partial left by an earlier fetch is completed by nginx's 206, not re-sent."""
    root, release, build_id, sha = published
    relpath = image_relpath(release, build_id)
    image = (root / relpath).read_bytes()
    kept = len(image) // 3
    cache = Path(cache_env["UNDERCLOUD_APPLIANCE_CACHE"])
    cache.mkdir(parents=True)
    with NginxServer(root) as nginx:
        head = requests.head(f"{nginx.url}/{relpath}", timeout=10)
        (cache / f"{sha}.partial").write_bytes(image[:kept])
        (cache / f"{sha}.partial.json").write_text(
            json.dumps({"relpath": relpath, "etag": head.headers["ETag"], "size": len(image)})
        )
        resumed = json.loads(fetch(nginx.url, release, cache_env, "--build", build_id).stdout)
        assert resumed["resumed_from"] == kept
        assert resumed["transferred_bytes"] == len(image) - kept
        assert hashlib.sha256(Path(resumed["path"]).read_bytes()).hexdigest() == sha

        # The same partial with a stale validator: nginx sends the whole file.
        os.chmod(resumed["path"], 0o644)
        Path(resumed["path"]).unlink()
        (cache / f"{sha}.partial").write_bytes(image[:kept])
        (cache / f"{sha}.partial.json").write_text(
            json.dumps({"relpath": relpath, "etag": '"0-0"', "size": len(image)})
        )
        restarted = json.loads(fetch(nginx.url, release, cache_env, "--build", build_id).stdout)
        assert restarted["resumed_from"] == 0
        assert restarted["transferred_bytes"] == len(image)


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with SshServer() as server:
        yield server


def cutting_ssh_command(sshd: SshServer, workdir: Path, limit: int) -> str:
    """An ssh command line whose connections break after ``limit`` bytes of output."""
    script = workdir / "cutting-ssh"
    script.write_text(
        f"""#!/bin/bash
{sshd.ssh_command} "$@" | head -c {limit}
status=("${{PIPESTATUS[@]}}")
# ssh killed by SIGPIPE: the output was cut, report it as ssh does a lost connection.
[ "${{status[0]}}" -eq 141 ] && exit 255
exit "${{status[0]}}"
"""
    )
    script.chmod(0o755)
    return str(script)


def test_fetch_from_an_ssh_store_resumes_verifies_and_caches(
    sshd: SshServer, published, cache_env, tmp_path: Path
) -> None:
    root, release, build_id, sha = published
    size = (root / image_relpath(release, build_id)).stat().st_size
    url = sshd.url(root)
    cut = size // 3
    env = {
        **cache_env,
        "UNDERCLOUD_APPLIANCE_FETCH_ATTEMPTS": "1",
        "UNDERCLOUD_APPLIANCE_SSH_COMMAND": cutting_ssh_command(sshd, tmp_path, cut),
    }
    interrupted = fetch(url, release, env, check=False)
    assert interrupted.returncode == 7, interrupted.stderr
    assert f"{sha}.partial" in cache_files(env)
    assert f"{sha}.qcow2" not in cache_files(env), "a partial must never get the final name"

    env["UNDERCLOUD_APPLIANCE_SSH_COMMAND"] = sshd.ssh_command
    resumed = json.loads(fetch(url, release, env).stdout)
    kept = resumed["resumed_from"]
    print(f"ssh resume: {resumed['transferred_bytes']} of {size} bytes after a cut at {cut}")
    assert resumed["build_id"] == build_id and resumed["sha256"] == sha
    assert cut - MIB < kept <= cut and resumed["transferred_bytes"] == size - kept
    assert hashlib.sha256(Path(resumed["path"]).read_bytes()).hexdigest() == sha

    again = json.loads(fetch(url, release, env, "--build", build_id).stdout)
    assert again["from_cache"] is True and again["transferred_bytes"] == 0

    unknown = fetch(url, release, env, "--label", "nope", check=False)
    assert unknown.returncode == 5 and "'nope'" in unknown.stderr
