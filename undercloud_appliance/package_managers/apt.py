"""apt (Debian): ``deb`` source lines under /etc/apt/sources.list.d, dpkg-query."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from undercloud_appliance.package_managers.interface import (
    MANAGED_MARKER,
    PackageManagerError,
    check_package_names,
    check_plain_value,
    check_puddle_id,
    check_repo,
)

# Debian Policy 5.6.1: lower case letters, digits, + - . ; at least two
# characters, starting with an alphanumeric.
DEBIAN_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
NONINTERACTIVE = ["env", "DEBIAN_FRONTEND=noninteractive", "NEEDRESTART_MODE=a"]
DPKG_KEEP_CONFIG = [
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
]
# dpkg-query output: status abbreviation, name, full version (epoch:upstream-revision).
INSTALLED_FORMAT = r"${db:Status-Abbrev}\t${Package}\t${Version}\n"
DPKG_ERROR_PACKAGE = re.compile(r"^dpkg: error processing (?:package |archive )?(\S+)", re.M)
ERRORS_WHILE_PROCESSING = re.compile(
    r"^Errors were encountered while processing:\n((?: \S+\n?)+)", re.M
)
APT_MISSING_PACKAGE = re.compile(
    r"^E: (?:Unable to locate package (\S+)|Package '([^']+)' has no installation candidate)",
    re.M,
)


class AptPackageManager:
    name = "apt"
    repo_dir = "/etc/apt/sources.list.d"

    def package_name_ok(self, name: str) -> bool:
        return bool(DEBIAN_PACKAGE_NAME.fullmatch(name))

    def source_line(self, repo: Mapping[str, Any]) -> str:
        check_repo(repo)
        options = []
        if repo.get("trusted"):
            options.append("trusted=yes")
        if repo.get("signed_by"):
            options.append(f"signed-by={check_plain_value(repo['signed_by'], 'signed_by path')}")
        suite = check_plain_value(repo.get("suite", "./"), f"repository {repo['name']!r} suite")
        components = repo.get("components") or []
        if isinstance(components, str):
            components = components.split()
        if suite.endswith("/") and components:
            raise PackageManagerError(
                f"repository {repo['name']!r}: a flat suite ({suite}) takes no components"
            )
        parts = ["deb"]
        if options:
            parts.append(f"[{' '.join(options)}]")
        parts += [repo["url"], suite]
        parts += [
            check_plain_value(c, f"repository {repo['name']!r} component") for c in components
        ]
        return " ".join(parts)

    def repo_files(self, repos: Sequence[Mapping[str, Any]], puddle_id: str) -> dict[str, str]:
        check_puddle_id(puddle_id)
        files = {}
        for repo in repos:
            line = self.source_line(repo)
            files[f"{self.repo_dir}/{repo['name']}.list"] = (
                f"{MANAGED_MARKER}\n# puddle {puddle_id}\n{line}\n"
            )
        return files

    def fetch_commands(self, repos: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        return []

    def refresh_command(self) -> list[str]:
        return [
            *NONINTERACTIVE,
            "apt-get",
            "-q",
            "--error-on=any",
            "-o",
            "Acquire::Languages=none",
            "update",
        ]

    def upgrade_command(self) -> list[str]:
        return [*NONINTERACTIVE, "apt-get", "-q", "-y", *DPKG_KEEP_CONFIG, "dist-upgrade"]

    def install_command(self, packages: Sequence[str]) -> list[str]:
        names = check_package_names(self, packages)
        return [*NONINTERACTIVE, "apt-get", "-q", "-y", *DPKG_KEEP_CONFIG, "install", "--", *names]

    def clean_command(self) -> list[str]:
        return ["apt-get", "clean"]

    def list_installed_command(self) -> list[str]:
        return ["dpkg-query", "-W", "-f", INSTALLED_FORMAT]

    def parse_installed(self, output: str) -> dict[str, str]:
        installed = {}
        for line in output.splitlines():
            fields = line.split("\t")
            if len(fields) != 3:
                continue
            status, name, version = fields
            if status.strip() == "ii" and version:
                installed[name.split(":", 1)[0]] = version
        return installed

    def failed_packages(self, output: str) -> list[str]:
        names: list[str] = []
        for match in DPKG_ERROR_PACKAGE.finditer(output):
            names.append(match.group(1).split(":", 1)[0])
        for match in ERRORS_WHILE_PROCESSING.finditer(output):
            names += [line.strip().split(":", 1)[0] for line in match.group(1).splitlines()]
        for match in APT_MISSING_PACKAGE.finditer(output):
            names.append(match.group(1) or match.group(2))
        return list(dict.fromkeys(name for name in names if name))


APT = AptPackageManager()
