"""Render the release profile into the plain files the elements read.

Elements never parse YAML or JSON inside the image: the builder writes one
package per line, ready-made repo files and one command per line into a
directory that the ``appliance-build-data`` element copies into the chroot.
"""

from __future__ import annotations

import configparser
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from undercloud_appliance.errors import BuildError

# The profile loader rejects these already; checked again because these
# values end up in files the image's shell scripts read.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_:~-]*$")


def _safe(value: str, what: str) -> str:
    if not SAFE_NAME.fullmatch(value):
        raise BuildError(f"{what} {value!r} is not a safe name")
    return value


def apt_source_line(repo: Mapping[str, Any]) -> str:
    options = " [trusted=yes]" if repo.get("trusted") else ""
    components = " ".join(repo.get("components") or [])
    suite = repo.get("suite") or "./"
    return f"deb{options} {repo['url']} {suite} {components}".rstrip() + "\n"


def dnf_repo_file(repos: Sequence[Mapping[str, Any]]) -> str:
    config = configparser.ConfigParser(interpolation=None)
    for repo in repos:
        section = _safe(repo["name"], "repository name")
        config[section] = {
            "name": section,
            "baseurl": repo["url"],
            "enabled": "1",
            "gpgcheck": "1" if repo.get("gpgcheck") else "0",
            "module_hotfixes": "1",
        }
        if repo.get("priority") is not None:
            config[section]["priority"] = str(repo["priority"])
    text = io.StringIO()
    config.write(text)
    return text.getvalue()


PROVISIONING_VALUE = re.compile(r"^[A-Za-z0-9./]+$")


def provisioning_env(provisioning: Mapping[str, str]) -> str:
    """``PROVISIONING_ADDRESS=192.168.24.1/24`` lines, for the set-up script to source."""
    lines = []
    for key in ("interface", "address", "dhcp_start", "dhcp_end"):
        value = str(provisioning[key])
        if not PROVISIONING_VALUE.fullmatch(value):
            raise BuildError(f"provisioning.{key} {value!r} is not a safe value")
        lines.append(f"PROVISIONING_{key.upper()}={value}\n")
    return "".join(lines)


def write_appliance_data(
    data_dir: Path,
    *,
    package_manager: str,
    repos: Sequence[Mapping[str, Any]],
    packages: Sequence[str],
    install_commands: Sequence[str],
    user: str,
    provisioning: Mapping[str, str],
) -> None:
    """Write the directory ``DIB_APPLIANCE_DATA`` points at."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "undercloud-packages").write_text(
        "".join(_safe(name, "package name") + "\n" for name in packages)
    )
    for command in install_commands:
        if "\n" in command:
            raise BuildError(f"install command {command!r} spans lines; use one line each")
    (data_dir / "install-commands").write_text("".join(f"{c}\n" for c in install_commands))
    (data_dir / "user").write_text(_safe(user, "user name") + "\n")
    (data_dir / "provisioning.env").write_text(provisioning_env(provisioning))

    apt_dir = data_dir / "repos" / "apt"
    dnf_dir = data_dir / "repos" / "dnf"
    apt_dir.mkdir(parents=True, exist_ok=True)
    dnf_dir.mkdir(parents=True, exist_ok=True)
    if package_manager == "apt":
        for repo in repos:
            name = _safe(repo["name"], "repository name")
            (apt_dir / f"{name}.list").write_text(apt_source_line(repo))
    elif package_manager == "dnf":
        baseurl_repos = [r for r in repos if r.get("type", "baseurl") == "baseurl"]
        repo_files = [r for r in repos if r.get("type") == "repo-file"]
        if baseurl_repos:
            (dnf_dir / "undercloud-puddle.repo").write_text(dnf_repo_file(baseurl_repos))
        (dnf_dir / "repo-files").write_text(
            "".join(f"{_safe(r['name'], 'repository name')} {r['url']}\n" for r in repo_files)
        )
    else:
        raise BuildError(f"unknown package manager {package_manager!r}")
