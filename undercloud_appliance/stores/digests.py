"""Read a file once and compute its sha256 and md5 on the way.

The data is read in large chunks; each chunk goes to a sha256 thread, an
md5 thread and whoever iterates (an upload's body, a copy's ``write``).
hashlib releases the GIL while hashing large buffers, so both digests and
the transfer run in parallel and a publish costs about as much as the
slowest of the three, not their sum.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

CHUNK_SIZE = 4 * 1024 * 1024
# Chunks in flight per hashing thread: bounds memory to a few chunks.
QUEUE_DEPTH = 4


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str
    md5: str


class _HashingThread(threading.Thread):
    def __init__(self, name: str) -> None:
        super().__init__(name=f"hash-{name}", daemon=True)
        self.hash = hashlib.new(name)
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_DEPTH)

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            self.hash.update(chunk)


class HashedChunks:
    """The chunks of ``source``, hashed as they are read; iterate once.

    ``digests`` is set when the iteration reached the end of ``source``.
    Use it as a context manager (or call ``close``) so that the hashing
    threads also stop when the consumer gives up half-way.
    """

    def __init__(self, source: BinaryIO, progress: Callable[[int], object] | None = None) -> None:
        self.digests: Digests | None = None
        self._chunks = self._read(source, progress)

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        self._chunks.close()

    def __enter__(self) -> HashedChunks:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _read(self, source: BinaryIO, progress: Callable[[int], object] | None) -> Iterator[bytes]:
        hashers = [_HashingThread("sha256"), _HashingThread("md5")]
        for hasher in hashers:
            hasher.start()
        size = 0
        try:
            while chunk := source.read(CHUNK_SIZE):
                for hasher in hashers:
                    hasher.chunks.put(chunk)
                yield chunk
                size += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        finally:
            # Always stop the threads, also when the consumer failed half-way.
            for hasher in hashers:
                hasher.chunks.put(None)
            for hasher in hashers:
                hasher.join()
        sha256, md5 = (hasher.hash.hexdigest() for hasher in hashers)
        self.digests = Digests(size=size, sha256=sha256, md5=md5)


def copy_with_digests(
    source: BinaryIO,
    write: Callable[[bytes], object] | None = None,
    progress: Callable[[int], object] | None = None,
) -> Digests:
    """Read ``source`` to its end once; hash it and pass every chunk to ``write``."""
    with HashedChunks(source, progress) as chunks:
        for chunk in chunks:
            if write is not None:
                write(chunk)
    assert chunks.digests is not None
    return chunks.digests


def file_digests(path: Path, progress: Callable[[int], object] | None = None) -> Digests:
    """sha256 and md5 of a local file, read once."""
    with open_for_streaming(path) as source:
        return copy_with_digests(source, progress=progress)


def open_for_streaming(path: Path) -> BinaryIO:
    """Open ``path`` unbuffered (we read big chunks) and tell the kernel we read it once."""
    handle = open(path, "rb", buffering=0)  # noqa: SIM115 - returned to the caller
    with contextlib.suppress(AttributeError, OSError):  # only a hint
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return handle  # type: ignore[return-value]
