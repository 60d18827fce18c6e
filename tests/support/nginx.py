"""A throwaway nginx serving a directory on 127.0.0.1, for tests.

nginx runs as a non-daemon child process with its own configuration, pid
file, logs and temp directories in a private temporary directory; the
system nginx and its configuration are never touched.

    with NginxServer(root, dav=True, auth=("user", "secret")) as server:
        requests.get(f"{server.url}/release/label/BUILD_ID", auth=...)

Byte ranges are served (nginx does it by default for static files).  With
``dav=True`` the location also accepts PUT, DELETE, MKCOL, COPY, MOVE
(nginx's dav module) and PROPFIND, OPTIONS, LOCK, UNLOCK (dav-ext; locks
live ``dav_lock_timeout`` seconds unless refreshed).

Use ``nginx_server`` (below) as a pytest fixture factory, or the class as
a context manager.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

NGINX_BINARY = "/usr/sbin/nginx"
DAV_EXT_MODULE = Path("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so")


def free_tcp_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NginxServer:
    """nginx serving ``root`` at ``http://127.0.0.1:<port>/``."""

    def __init__(
        self,
        root: Path,
        dav: bool = False,
        auth: tuple[str, str] | None = None,
        dav_lock_timeout: int = 60,
    ) -> None:
        self.root = Path(root).resolve()
        self.dav = dav
        self.auth = auth
        # dav-ext decides how long a WebDAV LOCK lives, whatever clients ask.
        self.dav_lock_timeout = dav_lock_timeout
        self.port = 0
        self._workdir: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash; ``{url}/path`` maps to ``root/path``."""
        if not self.port:
            raise RuntimeError("nginx is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> Path:
        assert self._workdir is not None
        return self._workdir / "error.log"

    def start(self) -> NginxServer:
        if self._process is not None:
            return self
        if shutil.which(NGINX_BINARY) is None:
            pytest.skip("nginx is not installed (scripts/host-packages.txt: nginx-light)")
        if self.dav and not DAV_EXT_MODULE.exists():
            pytest.skip("libnginx-mod-http-dav-ext is not installed")
        self._workdir = Path(tempfile.mkdtemp(prefix="test-nginx-"))
        # A port can be taken between choosing and binding it: retry a few times.
        for _attempt in range(5):
            self.port = free_tcp_port()
            config = self._workdir / "nginx.conf"
            config.write_text(self._render_config())
            self._process = subprocess.Popen(
                [NGINX_BINARY, "-c", str(config), "-p", str(self._workdir), "-e", "stderr"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(self._workdir / "stderr.log").open("wb"),
            )
            if self._wait_until_listening():
                return self
            self._process.kill()
            self._process.wait()
            self._process = None
        log = (self._workdir / "stderr.log").read_text(errors="replace")
        raise RuntimeError(f"nginx did not start on 127.0.0.1:\n{log}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self.port = 0

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_listening(self, timeout: float = 10.0) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def _render_config(self) -> str:
        assert self._workdir is not None
        workdir = self._workdir
        load_module = f"load_module {DAV_EXT_MODULE};" if self.dav else ""
        lock_zone = (
            f"dav_ext_lock_zone zone=test_dav_locks:1m timeout={self.dav_lock_timeout}s;"
            if self.dav
            else ""
        )
        dav = (
            """
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS LOCK UNLOCK;
            dav_ext_lock zone=test_dav_locks;
            dav_access user:rw group:r all:r;
            create_full_put_path off;
            client_max_body_size 0;
            """
            if self.dav
            else ""
        )
        auth = ""
        if self.auth is not None:
            user, password = self.auth
            # nginx reads the {PLAIN} scheme: good enough for a test server.
            (workdir / "htpasswd").write_text(f"{user}:{{PLAIN}}{password}\n")
            auth = f'auth_basic "test"; auth_basic_user_file {workdir / "htpasswd"};'
        # "user root" only matters when started as root: the worker must be
        # able to read (and, with dav, write) the test's root directory.
        user_line = "user root;" if _running_as_root() else ""
        return f"""
{load_module}
{user_line}
daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 256; }}
http {{
    {lock_zone}
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    types {{ application/octet-stream qcow2; text/plain sha256 md5; application/json json; }}
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        autoindex on;
        location / {{
            {auth}
            {dav}
        }}
    }}
}}
"""


def _running_as_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def nginx_server() -> Iterator[Callable[..., NginxServer]]:
    """Factory fixture: ``nginx_server(root, dav=..., auth=..., dav_lock_timeout=...)``
    returns a started server, stopped after the test."""
    started: list[NginxServer] = []

    def start(root: Path, **options: object) -> NginxServer:
        server = NginxServer(root, **options).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
