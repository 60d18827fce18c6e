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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.child_server import ChildServer, free_tcp_port
from tests.support.requirements import skip_or_fail

__all__ = ["NginxServer", "free_tcp_port", "nginx_server"]

NGINX_BINARY = "/usr/sbin/nginx"
DAV_EXT_MODULE = Path("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so")


class NginxServer(ChildServer):
    """nginx serving ``root`` at ``http://127.0.0.1:<port>/``."""

    program = "nginx"

    def __init__(
        self,
        root: Path,
        dav: bool = False,
        auth: tuple[str, str] | None = None,
        dav_lock_timeout: int = 60,
    ) -> None:
        super().__init__()
        self.root = Path(root).resolve()
        self.dav = dav
        self.auth = auth
        # dav-ext decides how long a WebDAV LOCK lives, whatever clients ask.
        self.dav_lock_timeout = dav_lock_timeout

    @property
    def url(self) -> str:
        """Base URL without a trailing slash; ``{url}/path`` maps to ``root/path``."""
        if not self.port:
            raise RuntimeError("nginx is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    def start(self) -> NginxServer:
        if shutil.which(NGINX_BINARY) is None:
            skip_or_fail("nginx is not installed (scripts/host-packages.txt: nginx-light)")
        if self.dav and not DAV_EXT_MODULE.exists():
            skip_or_fail("libnginx-mod-http-dav-ext is not installed")
        return super().start()

    def _configure(self, workdir: Path) -> list[str]:
        config = workdir / "nginx.conf"
        config.write_text(self._render_config())
        return [NGINX_BINARY, "-c", str(config), "-p", str(workdir), "-e", "stderr"]

    def _render_config(self) -> str:
        workdir = self.workdir
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
