"""``http(s)://`` store: a WebDAV server (tested against nginx dav + dav-ext).

Reading needs only GET and HEAD, so any HTTP server that serves the tree
(nginx, Apache, ``python -m http.server``) is a store to fetch from.

- Downloads: GET, resumed with ``Range`` + ``If-Range`` (the ETag, else
  Last-Modified, of the first response); a server whose file changed
  answers ``200`` with the whole file and the download restarts from 0.
  Bodies are requested with ``Accept-Encoding: identity``: the bytes
  hashed are the bytes published.
- Uploads: PUT under a temporary name, HEAD to check the size, MOVE.
  The image's PUT body is a generator over the chunks being hashed.
  A build is staged as a hidden collection and MOVEd to its final name.
- Labels: WebDAV has no symlinks, so a label is a server-side COPY of the
  build collection.  The COPY goes to ``<release>/.staging/`` and is
  then MOVEd over ``<label>`` (Overwrite: T) in one request; the same for
  ``previous-<label>`` first.  A reader sees the old label or the new one
  (at worst a 404 while the server swaps them), never a label collection
  holding part of a build, also when this client is killed.
- The release lock is a WebDAV LOCK on ``<release>/.lock`` (RFC 4918);
  we ask for ``$UNDERCLOUD_APPLIANCE_STORE_LOCK_TIMEOUT`` seconds (default
  120), the server decides (nginx dav-ext: its ``dav_ext_lock_zone``
  timeout); the holder refreshes it at a third of what was granted, and a
  crashed holder's lock expires after one timeout.
- Transient failures (connection errors, timeouts, 5xx) are retried with
  a bounded budget, then reported as NetworkError.
- Redirects are followed, except from https to anything else: what TLS
  protected (checksums, manifest, image, credentials) is never fetched in
  the clear (UntrustedStoreData).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests
import urllib3

from undercloud_appliance.errors import (
    ApplianceError,
    ChecksumError,
    NetworkError,
    NotFoundError,
    StoreError,
    UntrustedStoreData,
)
from undercloud_appliance.retry_policies import transient_failures
from undercloud_appliance.stores.base import (
    SMALL_FILE_LIMIT,
    STAGING_DIRECTORY,
    Download,
    InterruptedTransfer,
    Store,
    refuse_large,
    staging_name,
    temporary_name,
)
from undercloud_appliance.stores.credentials import (
    describe_request_error,
    redact_url,
    store_credentials,
    url_without_userinfo,
)
from undercloud_appliance.stores.digests import Digests, copy_with_digests

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# How long a lock outlives a crashed holder (a live holder refreshes it).
LOCK_TIMEOUT_ENV = "UNDERCLOUD_APPLIANCE_STORE_LOCK_TIMEOUT"
LOCK_TIMEOUT_SECONDS = 120
LOCK_WAIT_SECONDS = 900
RETRY_ATTEMPTS = 4
RETRY_BUDGET_SECONDS = 60
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
TIMEOUT = (10, 120)  # connect, read (seconds)
LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    "<D:locktype><D:write/></D:locktype>"
    "<D:owner>undercloud-appliance</D:owner></D:lockinfo>"
)


def _lock_timeout() -> int:
    value = os.environ.get(LOCK_TIMEOUT_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else LOCK_TIMEOUT_SECONDS


def _granted_timeout(lock_response: bytes) -> int | None:
    """Seconds the server granted in a LOCK response (``Second-N``); None if unknown."""
    try:
        element = ElementTree.fromstring(lock_response).find(".//{DAV:}timeout")
    except ElementTree.ParseError:
        return None
    text = (element.text or "") if element is not None else ""
    seconds = text.strip().removeprefix("Second-")
    return int(seconds) if seconds.isdigit() and int(seconds) > 0 else None


def refuse_downgrade(from_url: str, to_url: str) -> None:
    """UntrustedStoreData when a redirect leaves https for another scheme."""
    target = urlsplit(to_url).scheme.lower()
    if urlsplit(from_url).scheme.lower() == "https" and target != "https":
        raise UntrustedStoreData(
            f"{redact_url(from_url)}: redirected from https to {target or 'no'}:// "
            f"({redact_url(to_url)[:200]}); refused"
        )


class NoDowngradeSession(requests.Session):
    """A requests session that follows redirects, but never from https to http."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # Called for every redirect before it is followed.
        target = super().get_redirect_target(resp)
        if target is not None:
            refuse_downgrade(resp.url, urljoin(resp.url, target))
        return target


class _TransientStatus(Exception):
    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


_TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, _TransientStatus)


class WebDavStore(Store):
    def __init__(self, url: str) -> None:
        self.display_url = redact_url(url)
        base = url_without_userinfo(url)
        self.base_url = base if base.endswith("/") else base + "/"
        self.session = NoDowngradeSession()
        self.session.auth = store_credentials(url)
        self.session.headers["User-Agent"] = "undercloud-appliance"
        # Hash exactly the bytes that were published: no transparent gzip.
        self.session.headers["Accept-Encoding"] = "identity"

    def close(self) -> None:
        self.session.close()

    # -- plumbing ---------------------------------------------------------

    def _url(self, path: str, collection: bool = False) -> str:
        url = self.base_url + quote(path.strip("/"))
        return url + "/" if collection and path else url

    def _request(
        self,
        method: str,
        path: str,
        *,
        collection: bool = False,
        ok: tuple[int, ...] = (200, 201, 204, 207),
        allow: tuple[int, ...] = (),
        session: requests.Session | None = None,
        retry: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request, retrying transient failures unless ``retry`` is
        False; map errors to ours."""
        session = session or self.session
        url = self._url(path, collection)
        kwargs.setdefault("timeout", TIMEOUT)
        retrying = transient_failures(
            _TRANSIENT_ERRORS,
            RETRY_ATTEMPTS if retry else 1,
            budget_seconds=RETRY_BUDGET_SECONDS,
            what="store request",
            describe=describe_request_error,
        )
        try:
            for attempt in retrying:
                with attempt:
                    response = session.request(method, url, **kwargs)
                    if response.status_code in TRANSIENT_STATUS:
                        response.close()
                        raise _TransientStatus(response)
        except _TRANSIENT_ERRORS as error:
            after = " after retries" if retry else ""
            raise NetworkError(
                f"{self.where(path)}: {method} failed{after}: {describe_request_error(error)}"
            ) from None
        except requests.RequestException as error:
            raise NetworkError(
                f"{self.where(path)}: {method} failed: {describe_request_error(error)}"
            ) from None
        status = response.status_code
        if status in ok or status in allow:
            return response
        if status in (401, 403):
            raise StoreError(
                f"{self.where(path)}: {method} refused (HTTP {status}): check "
                "UNDERCLOUD_APPLIANCE_STORE_USER/PASSWORD or ~/.netrc"
            )
        if status == 404:
            raise NotFoundError(f"{self.where(path)}: not found in the store")
        raise StoreError(f"{self.where(path)}: {method} failed: HTTP {status} {response.reason}")

    def _destination(self, path: str, collection: bool = False) -> str:
        return self._url(path, collection)

    def _move(self, source: str, target: str, collection: bool, overwrite: bool) -> int:
        response = self._request(
            "MOVE",
            source,
            collection=collection,
            headers={
                "Destination": self._destination(target, collection),
                "Overwrite": "T" if overwrite else "F",
            },
            allow=(412,),
        )
        return response.status_code

    def _make_collection(self, path: str) -> None:
        # 405: it exists already.  409: its parent is missing.
        response = self._request("MKCOL", path, collection=True, allow=(405, 409))
        if response.status_code == 409:
            raise NotFoundError(
                f"{self.where(path)}: cannot create: its parent collection does not exist"
            )

    # -- Store ------------------------------------------------------------

    def list_names(self, path: str) -> list[str]:
        response = self._request(
            "PROPFIND", path, collection=True, headers={"Depth": "1"}, ok=(207,)
        )
        own_path = urlsplit(self._url(path, collection=True)).path.rstrip("/")
        names = []
        for href in ElementTree.fromstring(response.content).iter("{DAV:}href"):
            href_path = unquote(urlsplit(href.text or "").path).rstrip("/")
            if href_path != unquote(own_path):
                names.append(href_path.rsplit("/", 1)[-1])
        return sorted(names)

    def read_bytes(self, path: str, limit: int = SMALL_FILE_LIMIT) -> bytes:
        with self._request("GET", path, ok=(200,), stream=True) as response:
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > limit:
                raise UntrustedStoreData(
                    f"{self.where(path)}: {announced} bytes, larger than {limit}; refused"
                )
            try:
                content = response.raw.read(limit + 1, decode_content=False)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise NetworkError(
                    f"{self.where(path)}: GET failed: {describe_request_error(error)}"
                ) from None
        return refuse_large(self, path, content, limit)

    def file_size(self, path: str) -> int | None:
        response = self._request("HEAD", path, ok=(200,), allow=(404,))
        if response.status_code == 404:
            return None
        return int(response.headers.get("Content-Length", -1))

    def modified_at(self, path: str) -> float | None:
        response = self._request("PROPFIND", path, headers={"Depth": "0"}, ok=(207,), allow=(404,))
        if response.status_code == 404:
            return None
        element = ElementTree.fromstring(response.content).find(".//{DAV:}getlastmodified")
        if element is None or not element.text:
            return None
        return parsedate_to_datetime(element.text).timestamp()

    def file_digests(self, path: str) -> Digests:
        response = self._request("GET", path, ok=(200,), stream=True)
        with response:
            response.raw.decode_content = True
            try:
                return copy_with_digests(response.raw)
            except (requests.RequestException, OSError) as error:
                raise NetworkError(
                    f"{self.where(path)}: download failed: {describe_request_error(error)}"
                ) from None

    @contextmanager
    def open_download(
        self, path: str, offset: int = 0, validator: str | None = None
    ) -> Iterator[Download]:
        resume = offset and validator
        headers = {"Range": f"bytes={offset}-", "If-Range": validator} if resume else {}
        try:
            # One try: the caller retries, resuming from what arrived.
            response = self._request(
                "GET", path, ok=(200, 206), allow=(416,), retry=False, stream=True, headers=headers
            )
        except NetworkError as error:
            raise InterruptedTransfer(str(error)) from None
        with response:
            if response.status_code == 416:
                # What we hold is longer than the file: it cannot be a prefix of it.
                raise InterruptedTransfer("HTTP 416 (partial larger than the file)", restart=True)
            if response.status_code == 206 and not _range_starts_at(response, offset):
                raise InterruptedTransfer("server sent a different byte range", restart=True)
            yield _HttpDownload(response, offset if response.status_code == 206 else 0)

    def make_staging_directory(self, parent: str, final_name: str) -> str:
        if self._request("PROPFIND", "", headers={"Depth": "0"}, allow=(404,)).status_code == 404:
            raise NotFoundError(f"{self.display_url}: store collection does not exist")
        parts = parent.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            self._make_collection("/".join(parts[:depth]))
        self._make_collection(f"{parent}/{STAGING_DIRECTORY}")
        staging = f"{parent}/{STAGING_DIRECTORY}/{staging_name(final_name)}"
        self._request("MKCOL", staging, collection=True, ok=(201,))
        return staging

    def upload(self, path: str, chunks: Iterable[bytes], size: int) -> None:
        body = _SizedBody(chunks, size)
        try:
            response = self.session.put(self._url(path), data=body, timeout=TIMEOUT)
        except requests.RequestException as error:
            if body.source_error is not None:
                raise body.source_error from None
            raise NetworkError(
                f"{self.where(path)}: upload failed: {describe_request_error(error)}"
            ) from None
        response.close()
        status = response.status_code
        if status in TRANSIENT_STATUS:
            raise NetworkError(f"{self.where(path)}: upload failed: HTTP {status}")
        if status not in (200, 201, 204):
            raise StoreError(f"{self.where(path)}: upload failed: HTTP {status}")

    def write_bytes(self, path: str, content: bytes) -> None:
        parent, _, name = path.rpartition("/")
        temporary = f"{parent}/{temporary_name(name)}" if parent else temporary_name(name)
        self._request("PUT", temporary, data=content, ok=(200, 201, 204))
        self.verify_upload(temporary, len(content), "")
        self._move(temporary, path, collection=False, overwrite=True)

    def verify_upload(self, path: str, size: int, sha256: str) -> None:
        # A plain WebDAV server cannot hash for us; HEAD tells what it stored.
        actual = self.file_size(path)
        if actual != size:
            raise ChecksumError(f"{self.where(path)}: store holds {actual} bytes, expected {size}")

    def commit_directory(self, staging: str, final: str) -> None:
        if self._move(staging, final, collection=True, overwrite=False) == 412:
            raise StoreError(f"{self.where(final)}: already exists in the store")

    def remove_tree(self, path: str) -> None:
        self._request("DELETE", path, collection=True, headers={"Depth": "infinity"}, allow=(404,))

    def point_label(self, release: str, label: str, build_id: str) -> str | None:
        try:
            previous = self.read_bytes(f"{release}/{label}/BUILD_ID").decode().strip() or None
        except NotFoundError:
            previous = None
        if previous is not None and previous != build_id:
            self._replace_with_copy(release, f"previous-{label}", previous)
        self._replace_with_copy(release, label, build_id)
        return previous

    def _replace_with_copy(self, release: str, name: str, build_id: str) -> None:
        """Make collection ``<release>/<name>`` a copy of build ``build_id``.

        The copy is made under a hidden name, then MOVEd over ``name`` with
        Overwrite: the server swaps the collection in one request, which
        completes even if this client dies meanwhile.
        """
        self._make_collection(f"{release}/{STAGING_DIRECTORY}")
        copy = f"{release}/{STAGING_DIRECTORY}/{staging_name(name)}"
        self._request(
            "COPY",
            f"{release}/{build_id}",
            collection=True,
            headers={
                "Destination": self._destination(copy, collection=True),
                "Depth": "infinity",
                "Overwrite": "F",
            },
            ok=(201, 204),
        )
        try:
            self.verify_upload(f"{copy}/BUILD_ID", len(build_id) + 1, "")
            self._move(copy, f"{release}/{name}", collection=True, overwrite=True)
        except BaseException:
            self.remove_tree(copy)
            raise

    @contextmanager
    def lock(self, release: str) -> Iterator[None]:
        self._make_collection(release)
        path = f"{release}/{LOCK_NAME}"
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            response = self._request(
                "LOCK",
                path,
                data=LOCK_BODY,
                headers={
                    "Timeout": f"Second-{_lock_timeout()}",
                    "Depth": "0",
                    "Content-Type": "application/xml",
                },
                ok=(200, 201),
                allow=(423, 405, 501),
            )
            if response.status_code in (405, 501):
                raise StoreError(
                    f"{self.where(path)}: the server does not support WebDAV LOCK, "
                    "so label changes cannot be serialised"
                )
            if response.status_code != 423:
                break
            if time.monotonic() > deadline:
                raise StoreError(f"{self.where(path)}: still locked after {LOCK_WAIT_SECONDS}s")
            time.sleep(0.2)
        token = response.headers.get("Lock-Token", "")
        granted = _granted_timeout(response.content) or _lock_timeout()
        # Refresh while held, so a long promotion keeps the lock, yet a
        # crashed holder's lock expires after one (short) timeout.
        released = threading.Event()
        refresher = threading.Thread(
            target=self._refresh_lock,
            args=(path, token, granted, released),
            name="webdav-lock-refresh",
            daemon=True,
        )
        refresher.start()
        try:
            yield
        finally:
            released.set()
            refresher.join()
            self._request("UNLOCK", path, headers={"Lock-Token": token}, allow=(409, 412))

    def _refresh_lock(self, path: str, token: str, granted: int, released: threading.Event) -> None:
        timeout = _lock_timeout()
        with NoDowngradeSession() as session:  # Sessions are not shared across threads
            session.auth = self.session.auth
            session.headers.update(self.session.headers)
            # The server decides how long a lock lives: refresh well within it.
            while not released.wait(max(granted / 3, 0.5)):
                try:
                    self._request(
                        "LOCK",
                        path,
                        headers={"Timeout": f"Second-{timeout}", "If": f"({token})"},
                        ok=(200,),
                        session=session,
                    )
                except ApplianceError as error:
                    log.warning("could not refresh the lock on %s: %s", self.where(path), error)


class _SizedBody:
    """A PUT body: the generator ``chunks``, sent with Content-Length ``size``.

    requests sends an iterable that has a length as it comes (without one
    it would switch to chunked encoding, which not every WebDAV server
    takes).  A failure while producing the chunks (reading the local
    image) is kept: the HTTP client reports it as a connection error.
    """

    def __init__(self, chunks: Iterable[bytes], size: int) -> None:
        self.chunks = chunks
        self.size = size
        self.source_error: Exception | None = None

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        source = iter(self.chunks)
        while True:
            try:
                chunk = next(source)
            except StopIteration:
                return
            except Exception as error:
                self.source_error = error
                raise
            yield chunk


class _HttpDownload(Download):
    """The body of a GET (``stream=True``) as it arrives."""

    def __init__(self, response: requests.Response, offset: int) -> None:
        self.response = response
        self.offset = offset
        self.position = offset
        self.total_size = _total_size(response, offset)
        self.validator = response.headers.get("ETag") or response.headers.get("Last-Modified")

    def read(self, size: int) -> bytes:
        try:
            chunk = self.response.raw.read(size, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise InterruptedTransfer(
                f"connection lost after {self.position} bytes: {type(error).__name__}"
            ) from None
        self.position += len(chunk)
        return chunk


def _range_starts_at(response: requests.Response, offset: int) -> bool:
    content_range = response.headers.get("Content-Range", "")
    # "bytes 1000-1999/2000"
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    return start == offset


def _total_size(response: requests.Response, offset: int) -> int | None:
    if response.status_code == 206:
        try:
            return int(response.headers["Content-Range"].rsplit("/", 1)[1])
        except (KeyError, IndexError, ValueError):
            return None
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None
