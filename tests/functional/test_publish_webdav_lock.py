"""The WebDAV release lock against nginx dav-ext: held (and refreshed) for
as long as a promotion runs, expiring soon after a holder dies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from publish.stores.webdav import LOCK_BODY, WebDavStore
from tests.support.nginx import NginxServer

TIMEOUT = 2


@pytest.fixture
def dav(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NginxServer]:
    monkeypatch.setenv("UNDERCLOUD_APPLIANCE_STORE_LOCK_TIMEOUT", str(TIMEOUT))
    with NginxServer(tmp_path, dav=True, dav_lock_timeout=TIMEOUT) as server:
        yield server


def try_lock(url: str) -> int:
    return requests.request(
        "LOCK", url, data=LOCK_BODY, headers={"Timeout": f"Second-{TIMEOUT}", "Depth": "0"}
    ).status_code


def test_lock_is_refreshed_while_held_and_released_after(dav: NginxServer) -> None:
    store = WebDavStore(f"{dav.url}/")
    lock_url = f"{dav.url}/rel/.lock"
    with store.lock("rel"):
        for _ in range(4):  # well past the timeout: only refreshing keeps it
            time.sleep(TIMEOUT)
            assert try_lock(lock_url) == 423
    assert try_lock(lock_url) in (200, 201)


def test_lock_of_a_dead_holder_expires(dav: NginxServer) -> None:
    store = WebDavStore(f"{dav.url}/")
    requests.request("MKCOL", f"{dav.url}/rel/")
    assert try_lock(f"{dav.url}/rel/.lock") in (200, 201)  # a holder that never unlocks
    started = time.monotonic()
    with store.lock("rel"):
        waited = time.monotonic() - started
    assert TIMEOUT - 1 <= waited < TIMEOUT + 5
