"""The test servers themselves (tests/support): nginx static/WebDAV/auth, sshd.

Other areas (the importer) rely on ``NginxServer``; these tests pin what it
promises: byte ranges, WebDAV methods and locks, basic auth, clean stop.
"""

from __future__ import annotations

import socket
from pathlib import Path

import requests

from tests.support.nginx import NginxServer, nginx_server  # noqa: F401 - fixture
from tests.support.sshd import SshServer


def test_static_server_with_ranges(nginx_server, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "file").write_bytes(b"0123456789")
    server = nginx_server(tmp_path)
    assert requests.get(f"{server.url}/dir/file").content == b"0123456789"
    ranged = requests.get(f"{server.url}/dir/file", headers={"Range": "bytes=2-4"})
    assert ranged.status_code == 206 and ranged.content == b"234"
    # Read-only without dav.
    assert requests.put(f"{server.url}/dir/new", data=b"x").status_code == 405
    assert not (tmp_path / "dir" / "new").exists()


def test_dav_server_with_auth_and_locks(tmp_path: Path) -> None:
    with NginxServer(tmp_path, dav=True, auth=("u", "p")) as server:
        port = server.port
        assert requests.put(f"{server.url}/a", data=b"x").status_code == 401
        assert requests.put(f"{server.url}/a", data=b"x", auth=("u", "p")).status_code == 201
        assert (tmp_path / "a").read_bytes() == b"x"
        first = requests.request("LOCK", f"{server.url}/l", auth=("u", "p"))
        assert first.status_code in (200, 201)
        second = requests.request("LOCK", f"{server.url}/l", auth=("u", "p"))
        assert second.status_code == 423
        unlock = requests.request(
            "UNLOCK",
            f"{server.url}/l",
            auth=("u", "p"),
            headers={"Lock-Token": first.headers["Lock-Token"]},
        )
        assert unlock.status_code == 204
    # Stopped: nothing listens any more.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_sshd_runs_commands() -> None:
    with SshServer() as server:
        result = server.run("echo ok")
        assert result.returncode == 0 and result.stdout == "ok\n"
