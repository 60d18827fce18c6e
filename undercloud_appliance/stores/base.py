"""The interface every store backend implements: the write side ``publish``
uses and the read side ``fetch`` uses.

Paths are store-relative, '/'-separated strings (``debian-zed/<build-id>``)
built with ``undercloud_appliance.store_layout``.  A backend only moves
bytes and names; publishing, promotion and retention rules live in
``publish.publishing``, ``publish.promotion`` and ``publish.retention``,
verifying and caching what is read in ``importer.fetch``, and they are the
same for every backend.

Atomicity contract (docs/publishing.rst):

- ``upload`` and ``write_bytes`` targets inside a staging directory
  (``<release>/.staging/<build-id>.tmp-XXXX``) are invisible until
  ``commit_directory`` renames the whole directory in one step.
- ``write_bytes`` outside staging replaces a file atomically.
- ``point_label`` switches a label so that a reader sees either the old
  build or the new one, never a mix inside one file or a partial build.
- ``lock`` serialises label changes and pruning of one release across
  processes and hosts.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager

from undercloud_appliance.errors import UntrustedStoreData
from undercloud_appliance.stores.digests import Digests

#: Per-release directory holding staged builds and label copies.  One known
#: place (not hidden names scattered in the release) because WebDAV servers
#: may leave dot-names out of listings; ``prune`` looks here for leftovers.
STAGING_DIRECTORY = ".staging"

#: ``read_bytes`` refuses larger files: metadata (BUILD_ID, checksums,
#: manifests, signatures) is small, and a store serving something huge
#: under such a name must not fill this host's memory.
SMALL_FILE_LIMIT = 16 * 1024 * 1024


def staging_name(final_name: str) -> str:
    """A unique name for staging ``final_name`` inside ``STAGING_DIRECTORY``."""
    return f"{final_name}.tmp-{secrets.token_hex(4)}"


def temporary_name(final_name: str) -> str:
    """A hidden, unique temporary name next to ``final_name`` (renamed over it)."""
    return f".{final_name}.tmp-{secrets.token_hex(4)}"


def staged_final_name(name: str) -> str | None:
    """``final_name`` of a ``staging_name``/``temporary_name``; None for other names."""
    stem, separator, _ = name.lstrip(".").partition(".tmp-")
    return stem if separator else None


class InterruptedTransfer(Exception):
    """A download broke off, or the store said "try again": worth resuming.

    ``restart`` says the bytes received so far cannot be continued (the store
    sent a range other than the one asked for): the next attempt starts at 0.
    """

    def __init__(self, reason: str, *, restart: bool = False) -> None:
        super().__init__(reason)
        self.restart = restart


class Download(ABC):
    """One read of a file, from ``offset`` to its end (``Store.open_download``)."""

    #: Where the bytes ``read`` returns start: the offset asked for, or 0
    #: when the file is no longer the version ``validator`` named.
    offset: int
    #: The whole file's size, when the store tells it.
    total_size: int | None
    #: What identifies this version of the file (an ETag, or size and
    #: modification time); a later resume passes it back.
    validator: str | None

    @abstractmethod
    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end.  InterruptedTransfer if the transfer broke."""


class Store(ABC):
    """One store, reachable by ``url``."""

    #: The store URL with any password removed: safe for logs and errors.
    display_url: str

    def where(self, path: str) -> str:
        """``path`` in this store, as error messages name it (no password)."""
        return f"{self.display_url.rstrip('/')}/{path}"

    # -- reading ------------------------------------------------------------

    @abstractmethod
    def list_names(self, path: str) -> list[str]:
        """Names in directory ``path`` (NotFoundError when it does not exist)."""

    @abstractmethod
    def read_bytes(self, path: str, limit: int = SMALL_FILE_LIMIT) -> bytes:
        """A small file's content (NotFoundError when it does not exist,
        UntrustedStoreData when it is larger than ``limit`` bytes: never more
        than ``limit + 1`` bytes are read)."""

    def read_text(self, path: str) -> str:
        """``read_bytes`` decoded as UTF-8 (undecodable bytes replaced)."""
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def exists(self, path: str) -> bool:
        """Whether file ``path`` is in the store."""
        return self.file_size(path) is not None

    @abstractmethod
    def file_size(self, path: str) -> int | None:
        """Size of file ``path`` as the store sees it; None when it does not exist."""

    @abstractmethod
    def modified_at(self, path: str) -> float | None:
        """Last modification of ``path`` (seconds since the epoch); None if absent."""

    @abstractmethod
    def file_digests(self, path: str) -> Digests:
        """sha256 and md5 of ``path`` computed from what the store holds."""

    @abstractmethod
    def open_download(
        self, path: str, offset: int = 0, validator: str | None = None
    ) -> AbstractContextManager[Download]:
        """Read file ``path`` from ``offset`` if it is still the version ``validator``
        names, else from 0 (``Download.offset`` says which).

        NotFoundError when the file does not exist; InterruptedTransfer for
        failures a later attempt may get past.
        """

    # -- writing ------------------------------------------------------------

    @abstractmethod
    def make_staging_directory(self, parent: str, final_name: str) -> str:
        """Create ``<parent>/.staging/<final_name>.tmp-XXXX`` (and its parents); return it."""

    @abstractmethod
    def upload(self, path: str, chunks: Iterable[bytes], size: int) -> None:
        """Write the ``size`` bytes ``chunks`` yields to ``path``, streaming them.

        Returns once the store has all of them; NetworkError when the
        connection failed (a new upload may succeed), StoreError otherwise.
        """

    @abstractmethod
    def write_bytes(self, path: str, content: bytes) -> None:
        """Replace file ``path`` with ``content`` atomically (temp name, then rename)."""

    def write_files(self, directory: str, files: dict[str, bytes]) -> None:
        """Write several small files into ``directory`` (a backend may batch them)."""
        for name, content in files.items():
            self.write_bytes(f"{directory}/{name}", content)

    @abstractmethod
    def verify_upload(self, path: str, size: int, sha256: str) -> None:
        """Check an uploaded file as far as the store allows (ChecksumError if wrong).

        Always the size; the sha256 too where the store can compute it cheaply
        on its side.
        """

    @abstractmethod
    def commit_directory(self, staging: str, final: str) -> None:
        """Rename directory ``staging`` to ``final`` in one step; StoreError if it exists."""

    @abstractmethod
    def remove_tree(self, path: str) -> None:
        """Delete directory ``path`` and everything in it (no error if absent)."""

    @abstractmethod
    def point_label(self, release: str, label: str, build_id: str) -> str | None:
        """Make ``<release>/<label>`` show build ``build_id``; keep the old one as
        ``previous-<label>``.  Call with ``lock(release)`` held.  Returns the
        build id the label showed before, if any."""

    @abstractmethod
    def lock(self, release: str) -> AbstractContextManager[None]:
        """Hold the release's lock (blocks until it is free)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""


def refuse_large(store: Store, path: str, content: bytes, limit: int) -> bytes:
    """``content`` (read with a limit of ``limit + 1`` bytes) unless it exceeds ``limit``."""
    if len(content) > limit:
        raise UntrustedStoreData(f"{store.where(path)}: larger than {limit} bytes; refused")
    return content
