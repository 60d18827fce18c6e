"""Package managers inside an appliance: apt (Debian) and dnf (CentOS/RHEL).

apt.py and dnf.py each implement the interface in interface.py; this module
picks one by name and plans an update (repo files + ordered commands) with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from undercloud_appliance.package_managers.apt import APT
from undercloud_appliance.package_managers.dnf import DNF
from undercloud_appliance.package_managers.interface import (
    FORBIDDEN_IN_VALUES,
    MANAGED_MARKER,
    PUDDLE_ID_SAFE,
    REPO_NAME,
    URL_SCHEMES,
    PackageManager,
    PackageManagerError,
    check_package_name,
    check_package_names,
    check_plain_value,
    check_puddle_id,
    check_repo,
    check_repo_url,
)

__all__ = [
    "FORBIDDEN_IN_VALUES",
    "MANAGED_MARKER",
    "PUDDLE_ID_SAFE",
    "REPO_NAME",
    "URL_SCHEMES",
    "PackageManager",
    "PackageManagerError",
    "UpdatePlan",
    "check_package_name",
    "check_package_names",
    "check_plain_value",
    "check_puddle_id",
    "check_repo",
    "check_repo_url",
    "find_puddle_repo_files_command",
    "get_package_manager",
    "is_puddle_repo_file",
    "plan_update",
]


def get_package_manager(name: str) -> PackageManager:
    """The package manager a profile's ``puddle.package_manager`` names."""
    managers: dict[str, PackageManager] = {"apt": APT, "dnf": DNF}
    try:
        return managers[name]
    except KeyError:
        raise PackageManagerError(
            f"unknown package manager {name!r} (known: {', '.join(sorted(managers))})"
        ) from None


@dataclass(frozen=True)
class UpdatePlan:
    """What switching an appliance to a puddle does, independent of how it is run.

    The offline updater applies it through libguestfs; an online updater
    writes ``repo_files`` and runs ``commands`` over ssh (quote each argv
    with ``shlex.join`` there: ssh hands the remote shell one string).
    """

    puddle_id: str
    repo_files: dict[str, str]
    commands: tuple[tuple[str, tuple[str, ...]], ...]  # (what it does, argv)


def plan_update(
    manager: PackageManager,
    repos: Sequence[Mapping[str, Any]],
    puddle_id: str,
    install_packages: Sequence[str] = (),
) -> UpdatePlan:
    """Repo files and the ordered commands that move an appliance to ``puddle_id``."""
    check_puddle_id(puddle_id)
    packages = check_package_names(manager, install_packages)
    commands: list[tuple[str, list[str]]] = [
        ("downloading a repo file", argv) for argv in manager.fetch_commands(repos)
    ]
    commands.append((f"{manager.name} refresh", manager.refresh_command()))
    if packages:
        commands.append((f"{manager.name} install", manager.install_command(packages)))
    commands.append((f"{manager.name} upgrade", manager.upgrade_command()))
    commands.append((f"{manager.name} clean", manager.clean_command()))
    return UpdatePlan(
        puddle_id=puddle_id,
        repo_files=manager.repo_files(repos, puddle_id),
        commands=tuple((what, tuple(argv)) for what, argv in commands),
    )


def is_puddle_repo_file(content: str, previous_urls: Iterable[str] = ()) -> bool:
    """A repo file an earlier puddle put in place (ours, or naming its URLs)."""
    return content.startswith(MANAGED_MARKER) or any(
        url and url in content for url in previous_urls
    )


def find_puddle_repo_files_command(
    manager: PackageManager, previous_urls: Iterable[str] = (), repo_dir: str | None = None
) -> list[str]:
    """argv printing the repo files of earlier puddles, one path a line (for ssh).

    The shell-free counterpart of :func:`is_puddle_repo_file` for an online
    update: ``grep`` lists files holding the marker or a previous puddle
    URL; it exits 1 when there are none, which is not an error.
    """
    patterns = [MANAGED_MARKER, *(url for url in previous_urls if url)]
    for pattern in patterns:
        if "\n" in pattern:
            raise PackageManagerError(f"repo URL {pattern!r} spans lines")
    argv = ["grep", "-lsF"]
    for pattern in patterns:
        argv += ["-e", pattern]
    return [*argv, "-r", "--", repo_dir or manager.repo_dir]
