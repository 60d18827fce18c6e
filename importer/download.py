"""Download one image into the cache: streamed, hashed on the way, resumable.

The store backend delivers the bytes (``Store.open_download``: HTTP
``Range`` + ``If-Range``, ``tail -c +N`` over ssh, a seek in a local
file); this module keeps them.  The sha256 is computed while the bytes
arrive (a hashing thread fed with each chunk; hashlib releases the GIL),
so there is no second pass over the image.  An interrupted download leaves
``<sha>.partial`` and its resume state (store path, the backend's version
validator, size) in the cache; the next attempt hashes the partial prefix
it already has (local disk) and asks the store for the rest.  A store
whose file changed sends the whole new file instead, and the download
restarts from zero: old and new bytes are never mixed.  Interrupted
transfers are retried (``transient_failures``), each retry resuming.  The
partial is renamed to ``<sha>.qcow2`` only after its sha256 matched.

The manifest's ``image.file_size`` caps the download: a store announcing a
larger file is refused before its body is read, and one that keeps sending
is cut off one byte past the size (UntrustedStoreData, the partial removed).
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

from importer.cache import ImageCache
from undercloud_appliance.errors import (
    ApplianceError,
    ChecksumError,
    NetworkError,
    UntrustedStoreData,
)
from undercloud_appliance.retry_policies import transient_failures
from undercloud_appliance.stores.base import Download, InterruptedTransfer, Store

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
QUEUE_DEPTH = 8
ATTEMPTS_ENV = "UNDERCLOUD_APPLIANCE_FETCH_ATTEMPTS"
DEFAULT_ATTEMPTS = 5


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


@dataclass
class _Transfer:
    """One image on its way from ``store`` into ``cache``."""

    store: Store
    relpath: str
    cache: ImageCache
    sha256: str
    expected_size: int | None
    result: DownloadResult

    @property
    def where(self) -> str:
        return self.store.where(self.relpath)

    @property
    def partial(self) -> Path:
        return self.cache.partial_path(self.sha256)


def download_image(
    store: Store,
    relpath: str,
    cache: ImageCache,
    sha256: str,
    expected_size: int | None,
) -> DownloadResult:
    """Download ``relpath`` into the cache as ``<sha256>.qcow2`` and verify it."""
    cache.ensure()
    transfer = _Transfer(
        store,
        relpath,
        cache,
        sha256,
        expected_size,
        DownloadResult(cache.partial_path(sha256), 0, 0),
    )
    attempts = _attempts()
    retrying = transient_failures(
        InterruptedTransfer, attempts, what=f"download of {transfer.where}"
    )
    try:
        digest = retrying(_one_attempt, transfer)
    except UntrustedStoreData:
        cache.discard_partial(sha256)
        raise
    except InterruptedTransfer as error:
        raise NetworkError(
            f"{transfer.where}: download failed after {attempts} attempts: {error} "
            f"(kept {transfer.partial.name} to resume)"
        ) from None
    if digest != sha256:
        cache.discard_partial(sha256)
        raise ChecksumError(
            f"{transfer.where}: sha256 is {digest}, the store published {sha256}; "
            "nothing was cached"
        )
    return transfer.result


def _one_attempt(transfer: _Transfer) -> str:
    """One read from the store (resuming a usable partial); returns the whole file's sha256."""
    state = transfer.cache.read_partial_state(transfer.sha256) or {}
    offset = transfer.partial.stat().st_size if transfer.partial.exists() else 0
    # Partials of earlier versions named the validator "etag" or "last_modified".
    validator = state.get("validator") or state.get("etag") or state.get("last_modified")
    if state.get("relpath") != transfer.relpath or not validator:
        offset = 0
    try:
        with transfer.store.open_download(transfer.relpath, offset, validator) as source:
            if offset and source.offset != offset:
                log.info("%s changed in the store: restarting from zero", transfer.where)
            return _keep(transfer, source)
    except InterruptedTransfer as error:
        if error.restart:
            transfer.cache.discard_partial(transfer.sha256)
        raise


def _keep(transfer: _Transfer, source: Download) -> str:
    """Write what ``source`` delivers into the partial; return the whole file's sha256."""
    offset = source.offset
    expected = transfer.expected_size
    if expected is not None and source.total_size is not None and source.total_size != expected:
        raise UntrustedStoreData(
            f"{transfer.where}: the store offers {source.total_size} bytes, the manifest's "
            f"image.file_size is {expected}; refused, nothing was cached"
        )
    total = source.total_size or expected
    transfer.cache.write_partial_state(
        transfer.sha256,
        {"relpath": transfer.relpath, "validator": source.validator, "size": total},
    )
    hasher = _Sha256Thread()
    hasher.start()
    transfer.result.resumed_from = offset
    try:
        with transfer.partial.open("r+b" if offset else "wb") as writer:
            if offset:
                _hash_prefix(transfer.partial, hasher, offset)
                writer.seek(offset)
                writer.truncate()
            received = _receive(source, writer, hasher, total, offset, transfer)
            writer.flush()
            os.fsync(writer.fileno())
    except BaseException:
        hasher.hexdigest()
        raise
    digest = hasher.hexdigest()
    if total is not None and offset + received != total:
        raise InterruptedTransfer(f"connection closed after {offset + received} of {total} bytes")
    return digest


def _hash_prefix(path: Path, hasher: _Sha256Thread, length: int) -> None:
    """Feed the first ``length`` bytes already downloaded to the hasher."""
    left = length
    with path.open("rb") as handle:
        while left and (chunk := handle.read(min(4 * CHUNK_SIZE, left))):
            hasher.put(chunk)
            left -= len(chunk)


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


def _next_read_size(transfer: _Transfer, position: int) -> int:
    """A chunk, but never more than one byte past the expected size (enough to see excess)."""
    if transfer.expected_size is None:
        return CHUNK_SIZE
    return max(1, min(CHUNK_SIZE, transfer.expected_size - position + 1))


def _receive(
    source: Download,
    writer: BinaryIO,
    hasher: _Sha256Thread,
    total: int | None,
    offset: int,
    transfer: _Transfer,
) -> int:
    """Receive on this thread while other threads write and hash: a three-stage pipeline."""
    received = 0
    writing = _ChunkConsumer("write", _WriteBehind(writer, offset).write)
    writing.start()
    bar = _progress_bar(total, offset, transfer.relpath.rsplit("/", 1)[-1])
    try:
        with bar:
            while chunk := source.read(_next_read_size(transfer, offset + received)):
                if transfer.expected_size is not None and (
                    offset + received + len(chunk) > transfer.expected_size
                ):
                    raise UntrustedStoreData(
                        f"{transfer.where}: the store sent more than the manifest's "
                        f"image.file_size of {transfer.expected_size} bytes; refused, "
                        "nothing was cached"
                    )
                hasher.put(chunk)
                writing.put(chunk)
                received += len(chunk)
                transfer.result.transferred_bytes += len(chunk)
                bar.update(len(chunk))
    finally:
        writing.finish()  # what arrived is on disk before a retry resumes from it
    return received
