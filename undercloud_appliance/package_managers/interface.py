"""The one small interface every package manager module implements, and its checks.

:class:`PackageManager` is what apt.py and dnf.py each implement: it
turns a puddle's rendered repositories into repo config files and gives the
commands an update runs, always as argument lists.  Nothing here runs a
command: the offline updater runs them through libguestfs, the online
updater over ssh.

Every value that reaches a file or a command is validated first
(:func:`check_package_name`, :func:`check_puddle_id`, :func:`check_repo`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.stores.credentials import redact_url

# A marker written at the top of every repo file this tool manages, so a
# later update can remove the previous puddle's files (and only those).
MANAGED_MARKER = "# Managed by undercloud-appliance: puddle repositories."

REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PUDDLE_ID_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
URL_SCHEMES = frozenset({"http", "https", "file", "ftp"})
FORBIDDEN_IN_VALUES = re.compile(r"[\s\x00-\x1f\x7f\[\]\"'`$\\]")


class PackageManagerError(ApplianceError):
    """A package name, puddle id or repo definition is unusable."""

    exit_code = 2


class PackageManager(Protocol):
    """What an updater needs from a package manager."""

    name: str
    repo_dir: str

    def package_name_ok(self, name: str) -> bool:
        """True when ``name`` is a valid package name for this manager."""

    def repo_files(self, repos: Sequence[Mapping[str, Any]], puddle_id: str) -> dict[str, str]:
        """Guest path -> content of the files configuring ``repos``."""

    def fetch_commands(self, repos: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        """Commands run inside the appliance to download repo files (may be none)."""

    def refresh_command(self) -> list[str]:
        """Re-read the repositories' metadata."""

    def upgrade_command(self) -> list[str]:
        """Upgrade every installed package to the newest available version."""

    def install_command(self, packages: Sequence[str]) -> list[str]:
        """Install (or upgrade) the named packages."""

    def clean_command(self) -> list[str]:
        """Drop downloaded package files (keeps the image small)."""

    def list_installed_command(self) -> list[str]:
        """Print installed packages, parsed by :meth:`parse_installed`."""

    def parse_installed(self, output: str) -> dict[str, str]:
        """Package name -> full version from :meth:`list_installed_command` output."""

    def failed_packages(self, output: str) -> list[str]:
        """Package names a failed upgrade's output blames, in order."""


def check_package_name(manager: PackageManager, name: str) -> str:
    if not manager.package_name_ok(name):
        raise PackageManagerError(f"invalid {manager.name} package name {name!r}")
    return name


def check_package_names(manager: PackageManager, names: Iterable[str]) -> list[str]:
    return [check_package_name(manager, name) for name in names]


def check_puddle_id(puddle_id: str, id_pattern: str | None = None) -> str:
    """A puddle id safe in paths and URLs that matches the profile's pattern."""
    if not PUDDLE_ID_SAFE.fullmatch(puddle_id):
        raise PackageManagerError(
            f"invalid puddle id {puddle_id!r}: only letters, digits, '.', '_' and '-'"
        )
    if id_pattern and not re.fullmatch(id_pattern, puddle_id):
        raise PackageManagerError(
            f"invalid puddle id {puddle_id!r}: does not match the profile's "
            f"puddle.id_pattern {id_pattern}"
        )
    return puddle_id


def check_repo_url(url: str, repo_name: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES or FORBIDDEN_IN_VALUES.search(url):
        raise PackageManagerError(
            f"repository {repo_name!r}: url {redact_url(url)!r} is not a plain "
            f"{'/'.join(sorted(URL_SCHEMES))} URL"
        )
    if parts.scheme != "file" and not parts.hostname:
        raise PackageManagerError(f"repository {repo_name!r}: url {redact_url(url)!r} has no host")
    return url


def check_repo(repo: Mapping[str, Any]) -> Mapping[str, Any]:
    """A rendered repo definition with a safe ``name`` and ``url``."""
    name = repo.get("name")
    if not isinstance(name, str) or not REPO_NAME.fullmatch(name):
        raise PackageManagerError(f"invalid puddle repository name {name!r}")
    url = repo.get("url")
    if not isinstance(url, str):
        raise PackageManagerError(f"repository {name!r}: missing url")
    check_repo_url(url, name)
    return repo


def check_plain_value(value: Any, what: str) -> str:
    """A short config value without whitespace, quotes or brackets."""
    if not isinstance(value, str) or not value or FORBIDDEN_IN_VALUES.search(value):
        raise PackageManagerError(f"invalid {what} {value!r}")
    return value
