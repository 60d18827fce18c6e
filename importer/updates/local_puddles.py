"""``update --puddle-dir DIR``: serve a local puddle tree to the guest for one update.

A puddle tree on the importing host (what ``puddle.base_url`` points at:
``DIR/<puddle-id>/``, ``DIR/labels/<label>``) is served over HTTP on the
address the running appliance reaches the host at, for the length of the
update only:

- qemu user networking (``--network user``): the host's 127.0.0.1, which
  the guest reaches as 10.0.2.2 (the update rewrites the URLs it hands to
  the guest);
- a libvirt network (``default``): the host's address on that network, the
  NAT gateway, as the BMC emulator uses.

The server is Python's threaded ``http.server`` (apt and dnf need plain
GETs; it serves the tree read-only, never outside it); it stops when the update
ends, so the guest's puddle repository then points at a server that is
gone until the next update replaces it.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from undercloud_appliance.errors import ApplianceError, NotFoundError
from undercloud_appliance.puddles import looks_like_label, render_template

LOOPBACK_ADDRESS = "127.0.0.1"
BASE_URL_FIELD = "{base_url}"


class PuddleDirError(ApplianceError):
    """--puddle-dir names no usable puddle tree."""

    exit_code = 2


class PuddleTreeHandler(http.server.SimpleHTTPRequestHandler):
    """Read-only, no request log on the terminal (the puddle check GETs directories)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_puddle_tree(
    directory: Path, address: str = LOOPBACK_ADDRESS, port: int = 0
) -> Iterator[str]:
    """Serve ``directory`` on ``address`` (port 0: a free one); yields the base URL, no /."""
    handler = functools.partial(PuddleTreeHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer((address, port), handler)
    except OSError as error:
        raise ApplianceError(
            f"--puddle-dir {directory}: cannot serve it on {address}:{port}: {error.strerror}"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="puddle-dir-http", daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def check_puddle_tree(
    directory: Path, puddle_settings: Mapping[str, Any], requested: str, release: str
) -> None:
    """``directory`` is a puddle tree holding ``requested`` (an id or a label).

    Checked on disk where the profile's template starts at ``{base_url}``;
    other layouts are left to the HTTP lookups that follow.
    """
    if not directory.is_dir():
        raise PuddleDirError(f"--puddle-dir {directory}: not a directory")
    variables = {"base_url": str(directory), "release": release}
    if looks_like_label(puddle_settings, requested):
        template = (puddle_settings.get("labels") or {}).get("url", "")
        what, variables["label"] = "label", requested
    else:
        repos = puddle_settings.get("repos") or [{}]
        template = repos[0].get("url", "")
        what, variables["puddle_id"] = "puddle", requested
    if not template.startswith(BASE_URL_FIELD):
        return
    expected = Path(render_template(template, variables))
    if not expected.exists():
        raise NotFoundError(f"--puddle-dir {directory}: no {what} {requested!r} ({expected})")
