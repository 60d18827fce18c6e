"""How this host runs virtual machines: KVM when it works, TCG otherwise.

Detected, never assumed: a container may expose ``/dev/kvm`` without the
CPU's virtualisation extensions (``kvm-pvm``), where ``-accel kvm`` aborts.
``UNDERCLOUD_APPLIANCE_ACCEL=kvm|tcg`` overrides the detection.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from undercloud_appliance.errors import ApplianceError

log = logging.getLogger(__name__)

ACCEL_ENV = "UNDERCLOUD_APPLIANCE_ACCEL"
GUESTFS_CACHE_ENV = "LIBGUESTFS_CACHEDIR"


def _cpu_has_virtualisation(cpuinfo: str) -> bool:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"vmx", "svm"})
    return False


@functools.cache
def accelerator() -> str:
    """``"kvm"`` if hardware virtualisation is usable here, else ``"tcg"``."""
    forced = os.environ.get(ACCEL_ENV)
    if forced:
        if forced not in ("kvm", "tcg"):
            raise ApplianceError(f"{ACCEL_ENV}={forced!r}: expected 'kvm' or 'tcg'")
        return forced
    kvm_device = Path("/dev/kvm")
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    usable = (
        kvm_device.exists()
        and os.access(kvm_device, os.R_OK | os.W_OK)
        and _cpu_has_virtualisation(cpuinfo)
    )
    result = "kvm" if usable else "tcg"
    log.debug("accelerator: %s", result)
    return result


def qemu_accel_args() -> list[str]:
    """qemu command line arguments selecting the accelerator and CPU model."""
    if accelerator() == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def libvirt_domain_type() -> str:
    """``<domain type=...>`` for libvirt: 'kvm' or 'qemu' (TCG)."""
    return "kvm" if accelerator() == "kvm" else "qemu"


def open_guestfs(*, network: bool = False, memsize_mib: int | None = None) -> Any:
    """A libguestfs handle set up for this host (not yet launched).

    The direct backend avoids needing libvirtd for image work; TCG is forced
    where KVM is not usable (the bindings do not read
    LIBGUESTFS_BACKEND_SETTINGS themselves).
    """
    try:
        import guestfs  # Debian python3-guestfs, via --system-site-packages
    except ImportError:
        raise ApplianceError(
            "the libguestfs Python bindings are missing: install Debian's python3-guestfs "
            "and use a venv made with --system-site-packages"
        ) from None
    handle = guestfs.GuestFS(python_return_dict=True)
    handle.set_backend("direct")
    if accelerator() == "tcg":
        handle.set_backend_settings(["force_tcg"])
    cache_dir = os.environ.get(GUESTFS_CACHE_ENV)
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        handle.set_cachedir(cache_dir)
    if network:
        handle.set_network(True)
    if memsize_mib:
        handle.set_memsize(memsize_mib)
    return handle
