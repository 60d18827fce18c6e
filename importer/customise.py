"""Customise a qcow2 layer over the cached image with libguestfs (never the image).

One guestfs launch does everything: inject the ssh public key for ``stack``
and ``root``, install the appliance's ssh host keys (importer.host_keys:
made on this host and pinned in its known_hosts), set the hostname, empty
``/etc/machine-id`` (systemd then
makes a fresh one on the first boot of every appliance booted from the
layer; pass ``machine_id`` to write a fixed one instead) and, when the layer
was resized larger than the image, grow the root partition and its
filesystem to fill the disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.host_keys import HostKey
from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.hypervisor import open_guestfs

log = logging.getLogger(__name__)

SSH_USERS = ("stack", "root")


@dataclass(frozen=True)
class Customisation:
    hostname: str
    authorized_key: str
    grow_root: bool = False
    machine_id: str | None = None
    host_keys: tuple[HostKey, ...] = ()


@dataclass
class CustomiseReport:
    root_device: str
    machine_id: str | None
    root_grown_to: int | None = None


def customise_overlay(overlay: Path, customisation: Customisation) -> CustomiseReport:
    handle = open_guestfs()
    try:
        handle.add_drive_opts(str(overlay), format="qcow2", readonly=False)
        handle.launch()
        roots = handle.inspect_os()
        if not roots:
            raise ApplianceError(f"{overlay}: libguestfs found no operating system in the image")
        root = roots[0]
        grown_to = _grow_root_filesystem(handle, root) if customisation.grow_root else None
        _mount_filesystems(handle, root)
        for user in SSH_USERS:
            _authorize_key(handle, user, customisation.authorized_key)
        _install_host_keys(handle, customisation.host_keys)
        _set_hostname(handle, customisation.hostname)
        machine_id = customisation.machine_id
        handle.write("/etc/machine-id", f"{machine_id}\n" if machine_id else "")
        handle.umount_all()
        handle.shutdown()
    except RuntimeError as error:  # the bindings raise RuntimeError for guestfs errors
        raise ApplianceError(f"customising {overlay} failed: {error}") from None
    finally:
        handle.close()
    return CustomiseReport(root, machine_id, grown_to)


def _mount_filesystems(handle: Any, root: str) -> None:
    mountpoints = handle.inspect_get_mountpoints(root)
    for mountpoint, device in sorted(mountpoints.items(), key=lambda item: len(item[0])):
        try:
            handle.mount(device, mountpoint)
        except RuntimeError as error:
            log.warning("cannot mount %s on %s: %s", device, mountpoint, error)


def _passwd_entry(handle: Any, user: str) -> tuple[int, int, str] | None:
    for line in handle.cat("/etc/passwd").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == user:
            return int(fields[2]), int(fields[3]), fields[5]
    return None


def _authorize_key(handle: Any, user: str, public_key: str) -> None:
    entry = _passwd_entry(handle, user)
    if entry is None:
        if user == "root":
            entry = (0, 0, "/root")
        else:
            raise ApplianceError(f"the image has no user {user!r} to inject the ssh key for")
    uid, gid, home = entry
    ssh_dir = f"{home.rstrip('/')}/.ssh"
    keys_file = f"{ssh_dir}/authorized_keys"
    if not handle.is_dir(ssh_dir):
        handle.mkdir_p(ssh_dir)
    existing = handle.cat(keys_file) if handle.is_file(keys_file) else ""
    key = public_key.strip()
    if key not in existing.splitlines():
        if existing and not existing.endswith("\n"):
            existing += "\n"
        handle.write(keys_file, f"{existing}{key}\n")
    handle.chmod(0o700, ssh_dir)
    handle.chmod(0o600, keys_file)
    handle.chown(uid, gid, ssh_dir)
    handle.chown(uid, gid, keys_file)


# cloud-init's ssh module deletes and remakes host keys on an instance's
# first boot; where the image has cloud-init, it must keep the pinned ones.
CLOUD_INIT_KEEP_HOST_KEYS = "/etc/cloud/cloud.cfg.d/90-undercloud-appliance-host-keys.cfg"


def _install_host_keys(handle: Any, host_keys: tuple[HostKey, ...]) -> None:
    """The pinned host keys, and no others, as sshd wants them: root's, private 0600."""
    if not host_keys:
        return
    handle.mkdir_p("/etc/ssh")
    for stale in handle.glob_expand("/etc/ssh/ssh_host_*"):
        handle.rm_f(stale)
    for key in host_keys:
        handle.upload(str(key.private), key.guest_private_path)
        handle.upload(str(key.public), key.guest_public_path)
        handle.chown(0, 0, key.guest_private_path)
        handle.chown(0, 0, key.guest_public_path)
        handle.chmod(0o600, key.guest_private_path)
        handle.chmod(0o644, key.guest_public_path)
    if handle.is_dir("/etc/cloud/cloud.cfg.d"):
        handle.write(CLOUD_INIT_KEEP_HOST_KEYS, "ssh_deletekeys: false\nssh_genkeytypes: []\n")


def _set_hostname(handle: Any, hostname: str) -> None:
    handle.write("/etc/hostname", f"{hostname}\n")
    hosts = handle.cat("/etc/hosts") if handle.is_file("/etc/hosts") else ""
    lines = [line for line in hosts.splitlines() if not line.startswith("127.0.1.1")]
    lines.append(f"127.0.1.1\t{hostname}")
    handle.write("/etc/hosts", "\n".join(lines) + "\n")


def _grow_root_filesystem(handle: Any, root: str) -> int | None:
    """Grow the root partition to the end of the disk and its filesystem to match."""
    fs_type = handle.vfs_type(root)
    if handle.is_lv(root):
        log.warning("root filesystem %s is on LVM: not growing it", root)
        return None
    try:
        device = handle.part_to_dev(root)
        partnum = handle.part_to_partnum(root)
    except RuntimeError:
        device, partnum = root, None  # a filesystem on the whole disk
    if partnum is not None:
        partitions = handle.part_list(device)
        last = max(partition["part_num"] for partition in partitions)
        if partnum != last:
            log.warning("root partition %s is not the last one: not growing it", root)
            return None
        sectors = handle.blockdev_getsz(device)  # 512-byte sectors
        if handle.part_get_parttype(device) == "gpt":
            handle.part_expand_gpt(device)
            last_sector = sectors - 34  # the backup GPT lives in the last 33 sectors
        else:
            last_sector = sectors - 1
        handle.part_resize(device, partnum, last_sector)
    if fs_type.startswith("ext"):
        handle.e2fsck_f(root)
        handle.resize2fs(root)
    elif fs_type == "xfs":
        handle.mount(root, "/")
        handle.xfs_growfs("/")
        handle.umount("/")
    else:
        log.warning("root filesystem %s is %s: not growing it", root, fs_type)
        return None
    size = handle.blockdev_getsize64(root)
    log.info("grew %s (%s) to %d bytes", root, fs_type, size)
    return size
