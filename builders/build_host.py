"""Can this host build a release profile?  One answer for ``build`` and ``profiles matrix``.

A profile is buildable here when it is valid (``validate_profile_statically``)
and this host reaches what the build downloads from before and while
diskimage-builder runs: the profile's ``distro.mirror`` and
``distro.security_mirror`` (DIB's ``DIB_DISTRIBUTION_MIRROR`` and
``DIB_DEBIAN_SECURITY_MIRROR``), and ``puddle.base_url`` when a puddle is
pinned (labels are resolved and repositories read there); and when a DIB
base element that cannot download its base image has one on this host.
Reachable means the server answers HTTP at all (any status: the mirror's
top URL may well be a 404), through the proxy the environment names, as
apt and dnf in the build would use it.

``build`` asks before it writes anything, so ``build rdo-zed`` on a host
without the CentOS mirror stops at once with the reason the matrix shows,
not at the first download that fails (the puddle label, or with
``--puddle none`` minutes later inside DIB).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

import requests

from builders.profiles import Profile, validate_profile_statically
from undercloud_appliance.errors import ApplianceError, BuildError
from undercloud_appliance.puddles import NO_PUDDLE
from undercloud_appliance.retry_policies import transient_failures
from undercloud_appliance.stores.credentials import describe_request_error, redact_url

# Short: ``profiles matrix`` probes every profile's sources; one retry
# covers a dropped packet, not an outage.
PROBE_TIMEOUT = (5, 10)
PROBE_ATTEMPTS = 2
FTP_PORT = 21

# DIB base elements that cannot download their base image: the host must
# give one through these variables (its environment or the profile's
# ``environment``).  DIB's rhel element otherwise stops with "No source for
# a base image file configured" (its root.d: ``DIB_LOCAL_IMAGE``, or
# ``DIB_CLOUD_IMAGES`` with ``BASE_IMAGE_FILE``).
LOCAL_BASE_IMAGE = "DIB_LOCAL_IMAGE"
DOWNLOADED_BASE_IMAGE = ("DIB_CLOUD_IMAGES", "BASE_IMAGE_FILE")
ELEMENTS_WITHOUT_DOWNLOAD = frozenset({"rhel"})


class NotBuildableHere(BuildError):
    """This host cannot build the profile; ``reason`` is what ``profiles matrix`` shows."""

    def __init__(self, profile_name: str, reason: str) -> None:
        super().__init__(f"{profile_name}: not buildable on this host: {reason}")
        self.reason = reason


def check_buildable_here(
    profile: Profile, *, requested_puddle: str | None = None, puddle_base: str | None = None
) -> None:
    """Raise ``ProfileError`` (invalid profile) or ``NotBuildableHere`` (this host).

    ``requested_puddle`` and ``puddle_base`` are ``build``'s ``--puddle``
    and ``--puddle-base`` (None: the profile's own).
    """
    validate_profile_statically(profile)
    problems = [
        *unreachable_sources(profile, requested_puddle=requested_puddle, puddle_base=puddle_base),
        *missing_base_image(profile),
    ]
    if problems:
        raise NotBuildableHere(profile.name, "; ".join(problems))


def why_not_buildable_here(profile: Profile) -> str:
    """The reason ``build PROFILE`` would refuse here, "" when it would go ahead."""
    try:
        check_buildable_here(profile)
    except NotBuildableHere as refusal:
        return refusal.reason
    except ApplianceError as error:
        return str(error)
    return ""


def build_sources(
    profile: Profile, *, requested_puddle: str | None = None, puddle_base: str | None = None
) -> list[tuple[str, str]]:
    """(setting, URL) of every server a build of ``profile`` downloads from."""
    distro = profile.data["distro"]
    puddle = profile.data["puddle"]
    sources = [("distro.mirror", distro["mirror"])]
    if distro["security_mirror"]:
        sources.append(("distro.security_mirror", distro["security_mirror"]))
    base_url = puddle["base_url"] if puddle_base is None else puddle_base
    pinned = (requested_puddle or puddle["default"]) != NO_PUDDLE
    if pinned and base_url:
        sources.append(("--puddle-base" if puddle_base else "puddle.base_url", base_url))
    return sources


def unreachable_sources(
    profile: Profile, *, requested_puddle: str | None = None, puddle_base: str | None = None
) -> list[str]:
    """``<setting> <URL> unreachable (<why>)`` for each source this host does not reach."""
    problems = []
    for setting, url in build_sources(
        profile, requested_puddle=requested_puddle, puddle_base=puddle_base
    ):
        why = unreachable_because(url)
        if why:
            problems.append(f"{setting} {redact_url(url)} unreachable ({why})")
    return problems


def unreachable_because(url: str) -> str:
    """Why this host does not reach the server of ``url``; "" when it answers."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return "" if Path(urllib.parse.unquote(parts.path)).is_dir() else "no such directory"
    try:
        if parts.scheme == "ftp":
            _connect(parts.hostname or "", parts.port or FTP_PORT)
        else:
            transient_failures(
                (requests.ConnectionError, requests.Timeout), PROBE_ATTEMPTS, max_wait=1
            )(requests.head, url, timeout=PROBE_TIMEOUT, allow_redirects=False)
    except (requests.RequestException, OSError) as error:
        return describe_request_error(error)
    return ""


def _connect(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT[0]):
        pass


def missing_base_image(profile: Profile) -> list[str]:
    """The base image a DIB element cannot download, when this host does not give one."""
    element = profile.data["distro"]["base_element"]
    if element not in ELEMENTS_WITHOUT_DOWNLOAD:
        return []
    # The profile's environment wins, as in builders.dib.dib_environment.
    variables = {**os.environ, **profile.data["environment"]}
    local_image = variables.get(LOCAL_BASE_IMAGE)
    if local_image:
        if Path(local_image).is_file():
            return []
        return [f"{LOCAL_BASE_IMAGE} {local_image}: no such file"]
    if all(variables.get(name) for name in DOWNLOADED_BASE_IMAGE):
        return []
    return [
        f"distro.base_element {element!r} needs a base image on this host: set "
        f"{LOCAL_BASE_IMAGE} (or {' and '.join(DOWNLOADED_BASE_IMAGE)})"
    ]
