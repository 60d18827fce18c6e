"""Let libvirt's unprivileged qemu user open an appliance's disks, and nothing more.

qemu runs as libvirt's qemu user (importer.libvirt_domain).  libvirt chowns
the overlay and the node disks to that user while they run, but that user
must also reach them (search permission on every directory above them, such
as a root importer's ``/root``) and read the backing images, which libvirt
leaves alone.  This module grants exactly that with POSIX ACL entries for
that user: ``x`` on directories, ``r`` on the backing images.  It lists no
directory and reads no key: the state directory's key pairs stay the
importer's own (mode 0600 in 0700 directories).
"""

from __future__ import annotations

import logging
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path

from undercloud_appliance.errors import ApplianceError

log = logging.getLogger(__name__)

ACL_PACKAGE_HINT = "setfacl is not installed (Debian package acl)"
OPT_OUT_HINT = "or import with --qemu-user importer"


def grant_qemu_access(
    uid: int, gid: int, *, directories: Iterable[Path], readable: Iterable[Path]
) -> None:
    """Let ``uid`` reach ``directories`` (and the ones above them) and read ``readable``.

    Directories and files ``uid`` can use already (by owner, group or
    other bits) are left as they are.
    """
    to_search: dict[Path, None] = {}
    for directory in directories:
        for path in (directory, *directory.parents):
            to_search.setdefault(path, None)
    for path in to_search:
        if not _permits(path, uid, gid, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            _add_acl_entry(path, uid, "x")
    for path in readable:
        if not _permits(path, uid, gid, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH):
            _add_acl_entry(path, uid, "r")


def _permits(path: Path, uid: int, gid: int, user_bit: int, group_bit: int, other_bit: int) -> bool:
    """Whether the mode bits alone let ``uid`` (primary group ``gid``) do it."""
    try:
        info = path.stat()
    except OSError as error:
        raise ApplianceError(f"{path}: {error.strerror}") from None
    if info.st_uid == uid:
        return bool(info.st_mode & user_bit)
    if info.st_gid == gid and info.st_mode & group_bit:
        return True
    return bool(info.st_mode & other_bit)


def _add_acl_entry(path: Path, uid: int, permissions: str) -> None:
    entry = f"u:{uid}:{permissions}"
    try:
        subprocess.run(
            ["setfacl", "-m", entry, str(path)],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        raise ApplianceError(
            f"{ACL_PACKAGE_HINT}: it lets libvirt's qemu user (uid {uid}) reach {path}; "
            f"install it, {OPT_OUT_HINT}"
        ) from None
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or "").strip().splitlines()[-1:] or [f"exit {error.returncode}"]
        raise ApplianceError(
            f"{path}: cannot let libvirt's qemu user (uid {uid}) in ({detail[0]}); {OPT_OUT_HINT}"
        ) from None
    log.info("ACL %s on %s: libvirt's qemu user may use it", entry, path)
