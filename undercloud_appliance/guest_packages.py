"""Package versions as libguestfs reports them, in the form manifests record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def installed_package_versions(applications: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """name -> ``[epoch:]version[-release]`` from guestfs ``inspect_list_applications2``.

    An epoch of 0 (or none) and an empty release are left out, as dpkg and
    rpm print them.
    """
    versions = {}
    for app in applications:
        version = str(app.get("app2_version", ""))
        if app.get("app2_release"):
            version += f"-{app['app2_release']}"
        if app.get("app2_epoch"):
            version = f"{app['app2_epoch']}:{version}"
        versions[str(app["app2_name"])] = version
    return versions
