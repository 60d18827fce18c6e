"""The interface every store backend implements.

Paths are store-relative, '/'-separated strings (``debian-zed/<build-id>``)
built with ``undercloud_appliance.store_layout``.  A backend only moves
bytes and names; publishing, promotion and retention rules live in
``publish.publishing``, ``publish.promotion`` and ``publish.retention`` and
are the same for every backend.

Atomicity contract (docs/publishing.rst):

- ``open_upload`` and ``write_bytes`` targets inside a staging directory
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
from contextlib import AbstractContextManager
from typing import Protocol

from publish.digests import Digests


class UploadSink(Protocol):
    """Where ``copy_with_digests`` writes an upload's chunks."""

    def write(self, chunk: bytes) -> object: ...


#: Per-release directory holding staged builds and label copies.  One known
#: place (not hidden names scattered in the release) because WebDAV servers
#: may leave dot-names out of listings; ``prune`` looks here for leftovers.
STAGING_DIRECTORY = ".staging"


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


class Store(ABC):
    """One store, reachable by ``url``."""

    #: The store URL with any password removed: safe for logs and errors.
    display_url: str

    @abstractmethod
    def list_names(self, path: str) -> list[str]:
        """Names in directory ``path`` (NotFoundError when it does not exist)."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """A small file's content (NotFoundError when it does not exist)."""

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
    def make_staging_directory(self, parent: str, final_name: str) -> str:
        """Create ``<parent>/.staging/<final_name>.tmp-XXXX`` (and its parents); return it."""

    @abstractmethod
    def open_upload(self, path: str, size: int) -> AbstractContextManager[UploadSink]:
        """Write ``size`` bytes to ``path``; complete only when the context exits cleanly."""

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
