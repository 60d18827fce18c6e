"""The WebDAV release lock against nginx dav-ext: held (and refreshed) for
as long as a promotion runs, expiring soon after a holder dies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.nginx import NginxServer
from undercloud_appliance.stores.webdav import LOCK_BODY, WebDavStore

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


def lock_answers(server: NginxServer, path: str) -> list[int]:
    """The status of every LOCK request for ``path`` so far, from nginx's access log."""
    answers = []
    for line in (server.workdir / "access.log").read_text().splitlines():
        request, _, rest = line.partition('"')[2].partition('" ')
        if request.split()[:2] == ["LOCK", path]:
            answers.append(int(rest.split()[0]))
    return answers


def test_lock_of_a_dead_holder_expires(dav: NginxServer) -> None:
    store = WebDavStore(f"{dav.url}/")
    lock_url = f"{dav.url}/rel/.lock"
    requests.request("MKCOL", f"{dav.url}/rel/")
    assert try_lock(lock_url) in (200, 201)  # a holder that never unlocks
    with store.lock("rel"):
        holder, *store_attempts = lock_answers(dav, "/rel/.lock")
        assert try_lock(lock_url) == 423  # the store holds it now
    # The store was refused while the dead holder's lock lived, then got it:
    # it waited for the expiry instead of breaking the lock.
    assert holder in (200, 201)
    assert 423 in store_attempts and store_attempts[-1] in (200, 201), store_attempts
