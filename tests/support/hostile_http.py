"""A hostile store: an HTTP(S) server on 127.0.0.1 that serves a store tree
but lies where a test tells it to.

- ``oversized[relpath] = (announced, sent)``: answer with ``Content-Length:
  announced`` (``None``: no length, the body ends when the connection
  closes) and send ``sent`` bytes of zeros, whatever the file holds;
- ``redirects[relpath] = url``: answer ``302 Location: url``;
- ``sent[relpath]``: how many body bytes the socket accepted for each path.

``tls_certificate`` makes it HTTPS with that PEM certificate and key
(``make_self_signed_certificate``); clients trust it through
``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

CHUNK = 1024 * 1024


def make_self_signed_certificate(directory: Path) -> Path:
    """A PEM file holding a key and a self-signed certificate for 127.0.0.1."""
    pem = directory / "hostile-store.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(pem),
            "-out",
            str(directory / "certificate.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pem.write_text(pem.read_text() + (directory / "certificate.pem").read_text())
    return pem


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    server: HostileStore
    # A client that neither reads nor closes cannot hold a handler (and the
    # server's close, which waits for its handlers) for longer than this.
    timeout = 30

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        store = self.server
        relpath = self.path.split("?")[0].lstrip("/")
        if relpath in store.redirects:
            self.send_response(302)
            self.send_header("Location", store.redirects[relpath])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if relpath in store.oversized:
            announced, sent = store.oversized[relpath]
            if body:
                # Counted before the headers go out: a client that refuses on
                # the headers alone closes before the first byte of the body.
                store.sent.setdefault(relpath, 0)
            self.send_response(200)
            if announced is not None:
                self.send_header("Content-Length", str(announced))
            self.end_headers()
            self.close_connection = True
            if body:
                self._send_zeros(relpath, sent)
            return
        file = store.root / relpath
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{len(data)}"')
        self.end_headers()
        if body:
            self.wfile.write(data)
            store.sent[relpath] = store.sent.get(relpath, 0) + len(data)

    def _send_zeros(self, relpath: str, count: int) -> None:
        zeros = bytes(CHUNK)
        left = count
        try:
            while left > 0:
                chunk = zeros[: min(CHUNK, left)]
                self.wfile.write(chunk)
                left -= len(chunk)
                self.server.sent[relpath] = self.server.sent.get(relpath, 0) + len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
            pass  # the client stopped reading: what the test hopes for


class HostileStore(http.server.ThreadingHTTPServer):
    # Closing waits for the handlers, so ``sent`` is final once the ``with`` ends.
    daemon_threads = False

    def __init__(self, root: Path, tls_certificate: Path | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _HostileHandler)
        self.root = root
        self.scheme = "http"
        if tls_certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_certificate)
            self.socket = context.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        self.oversized: dict[str, tuple[int | None, int]] = {}
        self.redirects: dict[str, str] = {}
        self.sent: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()
        self.server_close()
