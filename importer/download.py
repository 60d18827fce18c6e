"""Download one image into the cache: streamed, hashed on the way, resumable.

The sha256 is computed while the bytes arrive (a hashing thread fed with
each chunk; hashlib releases the GIL), so there is no second pass over the
image.  An interrupted download leaves ``<sha>.partial`` and its resume
state (URL, ETag, Last-Modified, size) in the cache; the next attempt hashes
the partial prefix it already has (local disk) and asks for the rest with
``Range`` + ``If-Range``.  A server whose file changed answers ``200`` with
the whole new file instead of ``206``, and the download restarts from zero:
old and new bytes are never mixed.  Transient failures (connection reset,
timeouts, HTTP 5xx) are retried with tenacity, each retry resuming.  The
partial is renamed to ``<sha>.qcow2`` only after its sha256 matched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests
import tenacity
import urllib3

from importer.cache import ImageCache
from importer.store_reader import StoreReader
from undercloud_appliance.errors import (
    ApplianceError,
    ChecksumError,
    NetworkError,
    NotFoundError,
    StoreError,
)

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
QUEUE_DEPTH = 8
ATTEMPTS_ENV = "UNDERCLOUD_APPLIANCE_FETCH_ATTEMPTS"
DEFAULT_ATTEMPTS = 5


class TransientDownloadError(Exception):
    """A failure worth retrying: the partial file is kept and resumed."""


@dataclass
class DownloadResult:
    path: Path
    transferred_bytes: int  # over the wire (or copied) by this call, all attempts
    resumed_from: int  # bytes of a previous partial kept by the last attempt


class _ChunkConsumer(threading.Thread):
    """Feed chunks to ``consume`` on another thread (hashlib and writes release the GIL)."""

    def __init__(self, name: str, consume: Callable[[bytes], object]) -> None:
        super().__init__(name=name, daemon=True)
        self.consume = consume
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.error: BaseException | None = None

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            if self.error is None:
                try:
                    self.consume(chunk)
                except BaseException as error:  # reported by finish()
                    self.error = error

    def put(self, chunk: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.chunks.put(chunk)

    def finish(self) -> None:
        """Wait until every chunk was consumed; re-raise a failure."""
        self.chunks.put(None)
        self.join()
        if self.error is not None:
            raise self.error


class _Sha256Thread(_ChunkConsumer):
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        super().__init__("sha256", self.digest.update)

    def hexdigest(self) -> str:
        self.finish()
        return self.digest.hexdigest()


def _attempts() -> int:
    value = os.environ.get(ATTEMPTS_ENV)
    if not value:
        return DEFAULT_ATTEMPTS
    try:
        return max(1, int(value))
    except ValueError:
        raise ApplianceError(f"{ATTEMPTS_ENV}={value!r}: expected an integer") from None


def _progress_bar(total: int | None, initial: int, label: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    )


def download_image(
    store: StoreReader,
    relpath: str,
    cache: ImageCache,
    sha256: str,
    expected_size: int | None,
) -> DownloadResult:
    """Download ``relpath`` into the cache as ``<sha256>.qcow2`` and verify it."""
    cache.ensure()
    result = DownloadResult(cache.partial_path(sha256), 0, 0)

    def one_attempt() -> str:
        if store.is_local:
            return _copy_local(store.local_path(relpath), cache, sha256, expected_size, result)
        return _http_attempt(store, relpath, cache, sha256, expected_size, result)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientDownloadError),
        stop=tenacity.stop_after_attempt(_attempts()),
        wait=tenacity.wait_exponential(multiplier=0.5, max=8),
        before_sleep=lambda state: log.warning(
            "download interrupted (%s); resuming (attempt %d)",
            state.outcome.exception(),
            state.attempt_number + 1,
        ),
        reraise=True,
    )
    url = store.file_url(relpath)
    try:
        digest = retrying(one_attempt)
    except TransientDownloadError as error:
        raise NetworkError(
            f"{url}: download failed after {_attempts()} attempts: {error} "
            f"(kept {cache.partial_path(sha256).name} to resume)"
        ) from None
    if digest != sha256:
        cache.discard_partial(sha256)
        raise ChecksumError(
            f"{url}: sha256 is {digest}, the store published {sha256}; nothing was cached"
        )
    return result


def _copy_local(
    source: Path,
    cache: ImageCache,
    sha256: str,
    expected_size: int | None,
    result: DownloadResult,
) -> str:
    partial = cache.partial_path(sha256)
    hasher = _Sha256Thread()
    hasher.start()
    try:
        with source.open("rb") as reader, partial.open("wb") as writer:
            bar = _progress_bar(expected_size, 0, source.name)
            with bar:
                while chunk := reader.read(CHUNK_SIZE):
                    hasher.put(chunk)
                    writer.write(chunk)
                    result.transferred_bytes += len(chunk)
                    bar.update(len(chunk))
            writer.flush()
            os.fsync(writer.fileno())
    except FileNotFoundError:
        hasher.hexdigest()
        partial.unlink(missing_ok=True)
        raise NotFoundError(f"{source}: not found in the store") from None
    except OSError as error:
        hasher.hexdigest()
        partial.unlink(missing_ok=True)
        raise StoreError(f"{source}: cannot copy: {error.strerror}") from None
    return hasher.hexdigest()


def _hash_prefix(path: Path, hasher: _Sha256Thread) -> int:
    """Feed the bytes already downloaded to the hasher; return their count."""
    kept = 0
    with path.open("rb") as handle:
        while chunk := handle.read(4 * CHUNK_SIZE):
            hasher.put(chunk)
            kept += len(chunk)
    return kept


def _http_attempt(
    store: StoreReader,
    relpath: str,
    cache: ImageCache,
    sha256: str,
    expected_size: int | None,
    result: DownloadResult,
) -> str:
    """One GET (ranged when a usable partial exists); returns the whole file's sha256."""
    url = store.file_url(relpath)
    partial = cache.partial_path(sha256)
    state = cache.read_partial_state(sha256)
    offset = partial.stat().st_size if partial.exists() else 0
    validator = (state or {}).get("etag") or (state or {}).get("last_modified")
    if not state or state.get("relpath") != relpath or not validator or offset == 0:
        offset = 0

    headers = {}
    if offset:
        headers = {"Range": f"bytes={offset}-", "If-Range": validator}
    try:
        response = store.request("GET", url, headers=headers, stream=True)
    except NetworkError as error:
        raise TransientDownloadError(str(error)) from None

    with response:
        status = response.status_code
        if status == 404:
            raise NotFoundError(f"{url}: not found (HTTP 404)")
        if status >= 500 or status == 429:
            raise TransientDownloadError(f"HTTP {status}")
        if status == 416:
            # Our partial is longer than the file: it cannot be a prefix of it.
            cache.discard_partial(sha256)
            raise TransientDownloadError("HTTP 416 (partial larger than the file)")
        if status not in (200, 206):
            raise StoreError(f"{url}: HTTP {status}")
        if status == 206 and not _range_starts_at(response, offset):
            cache.discard_partial(sha256)
            raise TransientDownloadError("server sent a different byte range")
        if status == 200 and offset:
            log.info("%s changed on the server (If-Range failed): restarting from zero", url)
            offset = 0

        total = _total_size(response, offset) or expected_size
        cache.write_partial_state(
            sha256,
            {
                "relpath": relpath,
                "url": response.url,
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
                "size": total,
            },
        )
        hasher = _Sha256Thread()
        hasher.start()
        result.resumed_from = offset
        try:
            mode = "r+b" if offset else "wb"
            with partial.open(mode) as writer:
                if offset:
                    _hash_prefix(partial, hasher)
                    writer.seek(offset)
                    writer.truncate()
                received = _receive(response, writer, hasher, total, offset, url, result)
                writer.flush()
                os.fsync(writer.fileno())
        except BaseException:
            hasher.hexdigest()
            raise
        digest = hasher.hexdigest()
    if total is not None and offset + received != total:
        raise TransientDownloadError(
            f"connection closed after {offset + received} of {total} bytes"
        )
    return digest


class _WriteBehind:
    """Write chunks and start their write-back early, so the final fsync is short.

    ``POSIX_FADV_DONTNEED`` on data written a moment ago starts asynchronous
    write-back of those pages (and drops them from the page cache once
    clean), so the disk works while the network still delivers.
    """

    WINDOW = 32 * CHUNK_SIZE

    def __init__(self, handle: BinaryIO, offset: int) -> None:
        self.handle = handle
        self.position = offset
        self.flushed_to = offset

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.position += len(chunk)
        if self.position - self.flushed_to >= self.WINDOW:
            self.handle.flush()
            os.posix_fadvise(
                self.handle.fileno(),
                self.flushed_to,
                self.position - self.flushed_to,
                os.POSIX_FADV_DONTNEED,
            )
            self.flushed_to = self.position


def _receive(
    response: requests.Response,
    writer: BinaryIO,
    hasher: _Sha256Thread,
    total: int | None,
    offset: int,
    url: str,
    result: DownloadResult,
) -> int:
    """Receive on this thread while other threads write and hash: a three-stage pipeline."""
    received = 0
    writing = _ChunkConsumer("write", _WriteBehind(writer, offset).write)
    writing.start()
    bar = _progress_bar(total, offset, url.rsplit("/", 1)[-1])
    try:
        with bar:
            while True:
                try:
                    chunk = response.raw.read(CHUNK_SIZE, decode_content=False)
                except (urllib3.exceptions.HTTPError, OSError) as error:
                    raise TransientDownloadError(
                        f"connection lost after {offset + received} bytes: {type(error).__name__}"
                    ) from None
                if not chunk:
                    break
                hasher.put(chunk)
                writing.put(chunk)
                received += len(chunk)
                result.transferred_bytes += len(chunk)
                bar.update(len(chunk))
    finally:
        writing.finish()  # what arrived is on disk before a retry resumes from it
    return received


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
    return int(length) if length and length.isdigit() else None
