"""dnf (CentOS Stream / RHEL): .repo files under /etc/yum.repos.d, rpm -qa.

Puddle repositories come in two RDO/OSP styles, chosen by the repo's
``type``:

``baseurl`` (default)
    ``url`` is the repository itself; a ``[name]`` section is rendered.
``repo-file``
    ``url`` points at a ready ``.repo`` file (RDO's ``delorean.repo``); it
    is downloaded inside the appliance by :meth:`DnfPackageManager.fetch_commands`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from undercloud_appliance.package_managers.interface import (
    MANAGED_MARKER,
    PackageManagerError,
    check_package_names,
    check_puddle_id,
    check_repo,
)

RPM_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")
REPO_TYPES = frozenset({"baseurl", "repo-file"})
INSTALLED_FORMAT = r"%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\n"
SCRIPTLET_FAILED = re.compile(
    r"%(?:pretrans|pre|post|preun|postun|posttrans|triggerin|triggerun)\((\S+)\) scriptlet failed"
)
SCRIPTLET_ERROR = re.compile(r"Error in \S+ scriptlet in rpm package (\S+)")
NO_MATCH = re.compile(r"(?:No match for argument|Unable to find a match): (\S+)")


def _name_from_nevra(nevra: str) -> str:
    """``foo-bar-1:1.0-1.el9.noarch`` -> ``foo-bar`` (name-version-release.arch)."""
    parts = nevra.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else nevra


class DnfPackageManager:
    name = "dnf"
    repo_dir = "/etc/yum.repos.d"

    def package_name_ok(self, name: str) -> bool:
        return bool(RPM_PACKAGE_NAME.fullmatch(name))

    def repo_type(self, repo: Mapping[str, Any]) -> str:
        repo_type = repo.get("type", "baseurl")
        if repo_type not in REPO_TYPES:
            raise PackageManagerError(
                f"repository {repo.get('name')!r}: unknown type {repo_type!r} "
                f"(known: {', '.join(sorted(REPO_TYPES))})"
            )
        return str(repo_type)

    def repo_path(self, repo: Mapping[str, Any]) -> str:
        return f"{self.repo_dir}/{repo['name']}.repo"

    def repo_section(self, repo: Mapping[str, Any], puddle_id: str) -> str:
        lines = [
            f"[{repo['name']}]",
            f"name={repo['name']} (puddle {puddle_id})",
            f"baseurl={repo['url']}",
            "enabled=1",
            f"gpgcheck={0 if repo.get('trusted') else 1}",
        ]
        if "priority" in repo:
            priority = repo["priority"]
            if not isinstance(priority, int) or isinstance(priority, bool):
                raise PackageManagerError(
                    f"repository {repo['name']!r}: priority {priority!r} is not an integer"
                )
            lines.append(f"priority={priority}")
        if repo.get("module_hotfixes"):
            lines.append("module_hotfixes=1")
        return "\n".join(lines) + "\n"

    def repo_files(self, repos: Sequence[Mapping[str, Any]], puddle_id: str) -> dict[str, str]:
        """Files for ``baseurl`` repos; ``repo-file`` repos come from :meth:`fetch_commands`."""
        check_puddle_id(puddle_id)
        files = {}
        for repo in repos:
            check_repo(repo)
            if self.repo_type(repo) == "baseurl":
                files[self.repo_path(repo)] = (
                    f"{MANAGED_MARKER}\n# puddle {puddle_id}\n{self.repo_section(repo, puddle_id)}"
                )
        return files

    def fetch_commands(self, repos: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        """Commands downloading each ``repo-file`` repo's .repo file into place."""
        commands = []
        for repo in repos:
            check_repo(repo)
            if self.repo_type(repo) == "repo-file":
                commands.append(
                    ["curl", "-fsS", "--retry", "3", "-o", self.repo_path(repo), "--", repo["url"]]
                )
        return commands

    def refresh_command(self) -> list[str]:
        return ["dnf", "-y", "makecache", "--refresh"]

    def upgrade_command(self) -> list[str]:
        return ["dnf", "-y", "upgrade", "--refresh"]

    def install_command(self, packages: Sequence[str]) -> list[str]:
        return ["dnf", "-y", "install", "--", *check_package_names(self, packages)]

    def clean_command(self) -> list[str]:
        return ["dnf", "clean", "packages"]

    def list_installed_command(self) -> list[str]:
        return ["rpm", "-qa", "--qf", INSTALLED_FORMAT]

    def parse_installed(self, output: str) -> dict[str, str]:
        installed = {}
        for line in output.splitlines():
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0] or fields[0] == "gpg-pubkey":
                continue
            name, version = fields
            installed[name] = version.removeprefix("0:")
        return installed

    def failed_packages(self, output: str) -> list[str]:
        names = [_name_from_nevra(m.group(1)) for m in SCRIPTLET_FAILED.finditer(output)]
        names += [m.group(1) for m in SCRIPTLET_ERROR.finditer(output)]
        names += [m.group(1) for m in NO_MATCH.finditer(output)]
        return list(dict.fromkeys(names))


DNF = DnfPackageManager()
