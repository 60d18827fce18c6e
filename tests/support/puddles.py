"""Make small, real test puddles: flat apt repositories of tiny .deb packages.

A puddle base directory looks like what ``release-profiles/bases/debian.yaml``
expects under ``puddle.base_url``::

    BASE/2026-11-20.1/   Packages, Release, undercloud-probe_1.0_all.deb
    BASE/2026-11-21.1/   ... undercloud-probe_2.0_all.deb
    BASE/2026-11-22.1/   ... undercloud-probe_3.0 + undercloud-probe-hook_1.0
                         (the hook's postinst fails: a broken puddle)
    BASE/labels/latest   "2026-11-21.1"

Every probe package installs ``/usr/share/undercloud-probe/version`` holding
its version, so a test can read what an update really put on disk.

Users try updates locally with::

    python -m tests.support.puddles make /srv/puddles
    python -m tests.support.puddles serve /srv/puddles --port 8080

Tests use the ``puddle_site`` fixture (import it into the test module) or
:func:`make_puddles` with :func:`serve_directory` for their own layouts.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from importer.updates.local_puddles import serve_puddle_tree

PROBE_PACKAGE = "undercloud-probe"
HOOK_PACKAGE = "undercloud-probe-hook"
PROBE_VERSION_FILE = "/usr/share/undercloud-probe/version"

P1 = "2026-11-20.1"
P2 = "2026-11-21.1"
P3_BROKEN = "2026-11-22.1"
LATEST_LABEL = "latest"

PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
PACKAGE_VERSION = re.compile(r"^[0-9][A-Za-z0-9.+~:-]*$")
PUDDLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class TestPackage:
    """One tiny Debian package; ``postinst_exit`` != 0 makes it fail to configure."""

    __test__ = False  # a test fixture's data, not a test class for pytest to collect

    name: str
    version: str
    depends: tuple[str, ...] = ()
    postinst_exit: int = 0
    # The postinst makes /etc/undercloud-appliance/<name>-password, as an
    # update's undercloud-setup makes passwords: an updated build must not keep it.
    makes_secret: bool = False
    # The postinst masks this systemd unit: the package installs, the appliance's
    # smoke test then fails (a puddle that passes the build and fails verification).
    masks_unit: str | None = None

    def __post_init__(self) -> None:
        if not PACKAGE_NAME.match(self.name):
            raise ValueError(f"invalid Debian package name {self.name!r}")
        if not PACKAGE_VERSION.match(self.version):
            raise ValueError(f"invalid Debian package version {self.version!r}")


@dataclass(frozen=True)
class PuddleSpec:
    """A dated puddle: its id, its tiny packages, real packages to download."""

    puddle_id: str
    packages: tuple[TestPackage, ...]
    downloads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not PUDDLE_ID.match(self.puddle_id):
            raise ValueError(f"invalid puddle id {self.puddle_id!r}")


DEFAULT_PUDDLES: tuple[PuddleSpec, ...] = (
    PuddleSpec(P1, (TestPackage(PROBE_PACKAGE, "1.0"),)),
    PuddleSpec(P2, (TestPackage(PROBE_PACKAGE, "2.0", makes_secret=True),)),
    PuddleSpec(
        P3_BROKEN,
        (
            TestPackage(PROBE_PACKAGE, "3.0", depends=(HOOK_PACKAGE,)),
            TestPackage(HOOK_PACKAGE, "1.0", postinst_exit=1),
        ),
    ),
)
DEFAULT_LABELS: dict[str, str] = {LATEST_LABEL: P2}


@dataclass
class PuddleSite:
    """Puddles on disk and, when served, the URL clients use for ``base_url``."""

    base_dir: Path
    puddle_ids: list[str]
    labels: dict[str, str]
    url: str = ""
    debs: dict[str, list[Path]] = field(default_factory=dict)


def build_deb(package: TestPackage, output_dir: Path) -> Path:
    """Build ``<name>_<version>_all.deb`` into ``output_dir`` with dpkg-deb."""
    output_dir.mkdir(parents=True, exist_ok=True)
    deb_path = output_dir / f"{package.name}_{package.version}_all.deb"
    with tempfile.TemporaryDirectory(prefix="deb-root-") as temp:
        root = Path(temp)
        control_dir = root / "DEBIAN"
        control_dir.mkdir()
        control = [
            f"Package: {package.name}",
            f"Version: {package.version}",
            "Architecture: all",
            "Maintainer: undercloud-appliance tests <tests@undercloud-appliance.invalid>",
            "Section: misc",
            "Priority: optional",
        ]
        if package.depends:
            control.append(f"Depends: {', '.join(package.depends)}")
        control.append(f"Description: undercloud-appliance test package {package.version}")
        (control_dir / "control").write_text("\n".join(control) + "\n")
        postinst = control_dir / "postinst"
        postinst.write_text(
            "#!/bin/sh\n"
            f'echo "{package.name} {package.version} postinst $1"\n'
            + (
                "mkdir -p /etc/undercloud-appliance\n"
                f"(umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' "
                f"> /etc/undercloud-appliance/{package.name}-password)\n"
                if package.makes_secret
                else ""
            )
            + (
                f"ln -sf /dev/null /etc/systemd/system/{package.masks_unit}\n"
                if package.masks_unit
                else ""
            )
            + (
                f'echo "{package.name}: simulated postinst failure" >&2\n'
                f"exit {package.postinst_exit}\n"
                if package.postinst_exit
                else "exit 0\n"
            )
        )
        postinst.chmod(0o755)
        payload_dir = root / "usr/share" / package.name
        payload_dir.mkdir(parents=True)
        (payload_dir / "version").write_text(package.version + "\n")
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb_path)],
            check=True,
            capture_output=True,
            text=True,
        )
    return deb_path


def download_debs(names: Sequence[str], output_dir: Path) -> list[Path]:
    """Real packages from the host's apt sources (``apt-get download``)."""
    for name in names:
        if not PACKAGE_NAME.match(name):
            raise ValueError(f"invalid Debian package name {name!r}")
    before = set(output_dir.glob("*.deb"))
    if names:
        subprocess.run(
            ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", "--", *names],
            cwd=output_dir,
            check=True,
            capture_output=True,
            text=True,
        )
    return sorted(set(output_dir.glob("*.deb")) - before)


def index_flat_repo(repo_dir: Path) -> None:
    """Write ``Packages`` (uncompressed: apt skips a .gz-only flat index) and ``Release``."""
    packages = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=repo_dir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (repo_dir / "Packages").write_text(packages)
    release = subprocess.run(
        ["apt-ftparchive", "release", "."],
        cwd=repo_dir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (repo_dir / "Release").write_text(release)


def make_puddles(
    base_dir: Path,
    specs: Sequence[PuddleSpec] = DEFAULT_PUDDLES,
    labels: dict[str, str] | None = None,
) -> PuddleSite:
    """Create one flat apt repo per puddle under ``base_dir`` plus label files."""
    labels = dict(DEFAULT_LABELS if labels is None else labels)
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    site = PuddleSite(base_dir=base_dir, puddle_ids=[], labels=labels)
    for spec in specs:
        repo_dir = base_dir / spec.puddle_id
        if repo_dir.exists():
            raise FileExistsError(f"puddle {repo_dir} already exists; puddles are immutable")
        repo_dir.mkdir()
        debs = [build_deb(package, repo_dir) for package in spec.packages]
        debs += download_debs(spec.downloads, repo_dir)
        index_flat_repo(repo_dir)
        site.puddle_ids.append(spec.puddle_id)
        site.debs[spec.puddle_id] = debs
    labels_dir = base_dir / "labels"
    labels_dir.mkdir(exist_ok=True)
    for label, puddle_id in labels.items():
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", label):
            raise ValueError(f"invalid label name {label!r}")
        (labels_dir / label).write_text(puddle_id + "\n")
    return site


def serve_directory(root: Path, port: int = 0) -> contextlib.AbstractContextManager[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (the importer's ``--puddle-dir`` server).

    Yields the base URL (no trailing /); the guest side reaches it at
    10.0.2.2 (user-mode networking).
    """
    return serve_puddle_tree(root, port=port)


@pytest.fixture(scope="session")
def puddle_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PuddleSite]:
    """The default puddles (P1, P2, broken P3, labels/latest -> P2), served."""
    site = make_puddles(tmp_path_factory.mktemp("puddles") / "base")
    with serve_directory(site.base_dir) as url:
        site.url = url
        yield site


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.puddles",
        description="Make (and serve) small local test puddles for trying updates.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="create P1, P2, broken P3 and labels/latest")
    make.add_argument("base_dir", type=Path)
    make.add_argument(
        "--download",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="also put this real package (apt-get download) into the newest good puddle",
    )
    serve = commands.add_parser("serve", help="serve a puddle base dir on 127.0.0.1")
    serve.add_argument("base_dir", type=Path)
    serve.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if args.command == "make":
        specs = list(DEFAULT_PUDDLES)
        if args.download:
            specs[1] = PuddleSpec(specs[1].puddle_id, specs[1].packages, tuple(args.download))
        site = make_puddles(args.base_dir, specs)
        for puddle_id in site.puddle_ids:
            names = ", ".join(deb.name for deb in site.debs[puddle_id])
            print(f"{site.base_dir / puddle_id}: {names}")
        for label, puddle_id in site.labels.items():
            print(f"{site.base_dir / 'labels' / label}: {puddle_id}")
        return 0
    with serve_directory(args.base_dir, args.port) as url:
        print(f"serving {args.base_dir} at {url} (use --puddle-base {url}); Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
