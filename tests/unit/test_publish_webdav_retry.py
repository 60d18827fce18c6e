"""WebDAV transient failures: retried within a bounded budget, then one clear
error that never shows credentials.  A small in-process HTTP server plays a
store that answers 503 or drops connections a given number of times."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from undercloud_appliance import retry_policies
from undercloud_appliance.errors import NetworkError
from undercloud_appliance.stores import webdav
from undercloud_appliance.stores.webdav import WebDavStore

PASSWORD = "do-not-print-me"


class FlakyDav(http.server.BaseHTTPRequestHandler):
    """PUT/HEAD/MOVE on an in-memory dict; fails the first ``failures`` requests."""

    server: FlakyServer

    def log_message(self, *args: object) -> None:
        pass

    def _fail(self) -> bool:
        self.server.requests.append(self.command)
        if self.server.failures > 0:
            self.server.failures -= 1
            if self.server.mode == "reset":
                self.connection.close()  # the client sees a dropped connection
                self.close_connection = True
                return True
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        return False

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self._fail():
            return
        self.server.files[self.path] = body
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        if self._fail():
            return
        body = self.server.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()

    def do_MOVE(self) -> None:
        if self._fail():
            return
        target = "/" + self.headers["Destination"].split("/", 3)[3]
        self.server.files[target] = self.server.files.pop(self.path)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


class FlakyServer(http.server.ThreadingHTTPServer):
    def __init__(self, failures: int, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), FlakyDav)
        self.failures = failures
        self.mode = mode
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []


@pytest.fixture
def flaky(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlakyServer]:
    failures, mode = request.param
    monkeypatch.setattr(
        retry_policies.tenacity, "wait_exponential", lambda **_: retry_policies.tenacity.wait_none()
    )
    server = FlakyServer(failures, mode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def store_for(server: FlakyServer) -> WebDavStore:
    return WebDavStore(f"http://publisher:{PASSWORD}@127.0.0.1:{server.server_address[1]}/store/")


@pytest.mark.parametrize("flaky", [(2, "503"), (2, "reset")], indirect=True)
def test_transient_failures_are_retried(flaky: FlakyServer) -> None:
    store_for(flaky).write_bytes("rel/BUILD_ID", b"x\n")
    assert flaky.files == {"/store/rel/BUILD_ID": b"x\n"}
    # Two failed PUTs, then PUT, HEAD (size check) and MOVE succeed.
    assert flaky.requests == ["PUT", "PUT", "PUT", "HEAD", "MOVE"]


@pytest.mark.parametrize("flaky", [(100, "503")], indirect=True)
def test_retry_budget_is_bounded_and_error_is_clean(flaky: FlakyServer) -> None:
    with pytest.raises(NetworkError) as caught:
        store_for(flaky).write_bytes("rel/BUILD_ID", b"x\n")
    message = str(caught.value)
    assert len(flaky.requests) == webdav.RETRY_ATTEMPTS
    assert "HTTP 503" in message and "after retries" in message
    assert "\n" not in message
    assert PASSWORD not in message
    assert "publisher@127.0.0.1" in message
