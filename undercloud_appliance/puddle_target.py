"""What derived builds and online updates share: where an update goes and how it fails.

- :func:`resolve_puddle_target` pins a puddle id or label with the puddle
  settings a build's manifest carries;
- :func:`guest_visible_url` rewrites the host's loopback into the address
  a guest on a user-mode network reaches the host at;
- :class:`UpdateError` and :func:`failure_summary` make a failed command
  one line naming the step.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.manifest import MANIFEST_NAME
from undercloud_appliance.package_managers import (
    PackageManager,
    check_puddle_id,
    check_repo_url,
    get_package_manager,
)
from undercloud_appliance.puddles import render_repos, resolve_puddle

# The host's 127.0.0.1 as a guest on qemu's user-mode network (slirp) reaches it.
# libguestfs' direct backend runs slirp with net=169.254.0.0/16 (gateway
# 169.254.2.2, measured: /proc/net/route inside the appliance); a plain
# qemu/libvirt user-mode guest uses the default 10.0.2.2.
GUESTFS_HOST_ADDRESS = "169.254.2.2"
USER_MODE_HOST_ADDRESS = "10.0.2.2"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Where an update leaves its log inside the appliance.
GUEST_LOG_DIR = "/var/log/undercloud-appliance"
# How much of a failed command's output is logged.
OUTPUT_TAIL_LINES = 25


class UpdateError(ApplianceError):
    """An update could not be applied; the output was not written."""

    exit_code = 9


def failure_summary(output: str) -> str:
    """The most telling line of a failed command's output, for a one-line error."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("E:", "Error:", "error:")):
            return line
    return lines[-1] if lines else "no output"


def guest_visible_url(url: str, host_address: str = GUESTFS_HOST_ADDRESS) -> str:
    """``url`` as a user-mode-network guest reaches it: the host's loopback -> ``host_address``."""
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK_HOSTS:
        return url
    netloc = host_address + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class PuddleTarget:
    """Where an update goes: the pinned puddle and its rendered repositories."""

    puddle_id: str
    release: str
    repos: list[dict[str, Any]]
    package_manager: PackageManager
    settings: dict[str, Any]


def resolve_puddle_target(
    manifest: Mapping[str, Any],
    requested: str,
    puddle_base: str | None = None,
    source: str = MANIFEST_NAME,
) -> PuddleTarget:
    """Pin ``requested`` (an id or a label) with the puddle settings a manifest carries.

    The profile's puddle section travels in the manifest
    (``profile.resolved.puddle``); ``puddle_base`` overrides its
    ``base_url`` (else the manifest's recorded one is used).
    """
    resolved = manifest["profile"].get("resolved") or {}
    settings = copy.deepcopy(resolved.get("puddle") or {})
    if not settings.get("id_pattern"):
        raise UpdateError(f"{source}: the profile has no puddle section")
    base_url = puddle_base or manifest["puddle"].get("base_url") or settings.get("base_url")
    if base_url:
        settings["base_url"] = check_repo_url(base_url.rstrip("/"), "puddle base URL")
    # Templates' {release} is the profile's OpenStack release (zed), else the profile name.
    release = str(resolved.get("release") or manifest["release"])
    package_manager = get_package_manager(settings.get("package_manager", "apt"))
    puddle_id = resolve_puddle(settings, requested, release)
    if puddle_id is None:
        raise UpdateError(
            f"--puddle {requested!r}: an update needs a puddle id or label, not 'none'"
        )
    check_puddle_id(puddle_id, settings["id_pattern"])
    return PuddleTarget(
        puddle_id=puddle_id,
        release=release,
        repos=render_repos(settings, puddle_id, release),
        package_manager=package_manager,
        settings=settings,
    )
