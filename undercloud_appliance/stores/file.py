"""``file://`` store: a local (or NFS-mounted) directory tree.

Reading is plain file access; a download can resume at an offset while
the file's size, modification time and inode are unchanged.
Labels are relative symlinks (``<release>/<label> -> <build-id>``) replaced
atomically by creating the new symlink under a temporary name and
``rename(2)``-ing it over the old one.  The release lock is ``flock(2)`` on
``<release>/.lock``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from undercloud_appliance.errors import ChecksumError, NotFoundError, StoreError
from undercloud_appliance.manifest import write_file_atomically
from undercloud_appliance.stores.base import (
    SMALL_FILE_LIMIT,
    STAGING_DIRECTORY,
    Download,
    Store,
    refuse_large,
    staging_name,
    temporary_name,
)
from undercloud_appliance.stores.digests import Digests, file_digests

LOCK_NAME = ".lock"


class FileStore(Store):
    def __init__(self, root: Path, display_url: str) -> None:
        self.root = root
        self.display_url = display_url

    def _path(self, path: str) -> Path:
        return self.root / path

    def list_names(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._path(path)))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self.where(path)}: no such directory in the store") from None
        except OSError as error:
            raise StoreError(f"{self.where(path)}: cannot list: {error.strerror}") from None

    def read_bytes(self, path: str, limit: int = SMALL_FILE_LIMIT) -> bytes:
        try:
            with self._path(path).open("rb") as handle:
                return refuse_large(self, path, handle.read(limit + 1), limit)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self.where(path)}: no such file in the store") from None
        except OSError as error:
            raise StoreError(f"{self.where(path)}: cannot read: {error.strerror}") from None

    def file_size(self, path: str) -> int | None:
        try:
            return self._path(path).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def modified_at(self, path: str) -> float | None:
        try:
            return self._path(path).lstat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    def file_digests(self, path: str) -> Digests:
        try:
            return file_digests(self._path(path))
        except FileNotFoundError:
            raise NotFoundError(f"{self.where(path)}: no such file in the store") from None
        except OSError as error:
            raise StoreError(f"{self.where(path)}: cannot read: {error.strerror}") from None

    @contextmanager
    def open_download(
        self, path: str, offset: int = 0, validator: str | None = None
    ) -> Iterator[Download]:
        try:
            handle = self._path(path).open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"{self.where(path)}: no such file in the store") from None
        except OSError as error:
            raise StoreError(f"{self.where(path)}: cannot read: {error.strerror}") from None
        with handle:
            download = _FileDownload(handle, self.where(path))
            if offset and download.validator == validator:
                handle.seek(offset)
                download.offset = offset
            yield download

    def make_staging_directory(self, parent: str, final_name: str) -> str:
        try:
            if not self.root.is_dir():
                # The embedded default store is created on first use; any other
                # root must exist, a typo should not silently grow a new tree.
                raise NotFoundError(f"{self.display_url}: store directory does not exist")
            self._path(f"{parent}/{STAGING_DIRECTORY}").mkdir(parents=True, exist_ok=True)
            staging = f"{parent}/{STAGING_DIRECTORY}/{staging_name(final_name)}"
            self._path(staging).mkdir()
        except OSError as error:
            raise StoreError(f"{self.where(parent)}: cannot create: {error.strerror}") from None
        return staging

    def upload(self, path: str, chunks: Iterable[bytes], size: int) -> None:
        target = self._path(path)
        try:
            with target.open("wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise StoreError(f"{self.where(path)}: cannot write: {error.strerror}") from None

    def write_bytes(self, path: str, content: bytes) -> None:
        try:
            write_file_atomically(self._path(path), content)
        except OSError as error:
            raise StoreError(f"{self.where(path)}: cannot write: {error.strerror}") from None

    def verify_upload(self, path: str, size: int, sha256: str) -> None:
        # The bytes were hashed on their way into this very file, and re-reading
        # it from the page cache would prove nothing: the size is the check.
        actual = self.file_size(path)
        if actual != size:
            raise ChecksumError(f"{self.where(path)}: {actual} bytes written, expected {size}")

    def commit_directory(self, staging: str, final: str) -> None:
        source, target = self._path(staging), self._path(final)
        _fsync_directory(source)
        try:
            # rename(2) refuses a non-empty target, and a published build is
            # never empty: an existing build is never replaced.
            if target.exists() or target.is_symlink():
                raise FileExistsError(errno.EEXIST, "exists")
            os.rename(source, target)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise StoreError(f"{self.where(final)}: already exists in the store") from None
            raise StoreError(f"{self.where(final)}: cannot rename: {error.strerror}") from None
        _fsync_directory(target.parent)

    def remove_tree(self, path: str) -> None:
        target = self._path(path)
        try:
            if target.is_symlink():
                target.unlink()
            else:
                shutil.rmtree(target)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise StoreError(f"{self.where(path)}: cannot delete: {error.strerror}") from None

    def point_label(self, release: str, label: str, build_id: str) -> str | None:
        release_dir = self._path(release)
        label_link = release_dir / label
        previous = None
        if label_link.is_symlink():
            previous = os.readlink(label_link)
        elif label_link.exists():
            raise StoreError(f"{self.where(f'{release}/{label}')}: exists and is not a symlink")
        try:
            if previous is not None and previous != build_id:
                _replace_symlink(release_dir, f"previous-{label}", previous)
            _replace_symlink(release_dir, label, build_id)
        except OSError as error:
            raise StoreError(
                f"{self.where(f'{release}/{label}')}: cannot move label: {error.strerror}"
            ) from None
        _fsync_directory(release_dir)
        return previous

    @contextmanager
    def lock(self, release: str) -> Iterator[None]:
        release_dir = self._path(release)
        try:
            release_dir.mkdir(parents=True, exist_ok=True)
            handle = (release_dir / LOCK_NAME).open("a")
        except OSError as error:
            raise StoreError(f"{self.where(release)}: cannot lock: {error.strerror}") from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class _FileDownload(Download):
    def __init__(self, handle: BinaryIO, where: str) -> None:
        status = os.fstat(handle.fileno())
        self.handle = handle
        self.where = where
        self.offset = 0
        self.total_size = status.st_size
        self.validator = f"{status.st_size}-{status.st_mtime_ns}-{status.st_ino}"

    def read(self, size: int) -> bytes:
        try:
            return self.handle.read(size)
        except OSError as error:
            raise StoreError(f"{self.where}: cannot read: {error.strerror}") from None


def _replace_symlink(directory: Path, name: str, target: str) -> None:
    temporary = directory / temporary_name(name)
    os.symlink(target, temporary)
    try:
        os.replace(temporary, directory / name)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _fsync_directory(path: Path) -> None:
    """Make renames inside ``path`` durable before we report success."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
