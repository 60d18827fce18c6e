"""End to end: minor update, failed update rolled back, major upgrade, rollback.

The appliance is the session's debian-ci build updated offline to puddle P1
(probe 1.0), published to a ``file://`` store and imported under a real
libvirtd with qemu user networking (the test puddles are served on the
host's 127.0.0.1, which such a guest reaches at 10.0.2.2).  Then, with the
real CLI:

1. README's update walk-through as written (the test puddles made into a
   directory, ``update --puddle latest --puddle-dir DIR``): P2, probe 2.0,
   history names P2, the short-lived server is gone afterwards;
2. bad input (unknown puddle id, unreachable puddle server, label resolving
   to nothing): one-line errors, no snapshot taken, nothing changed;
3. ``update --puddle P3`` (a package whose postinst fails): reverted to the
   snapshot automatically, probe 2.0 again, the failure in the history;
4. ``upgrade --to-release debian-ci-next``: the next release's puddle and
   upgrade/smoke commands (from its manifest published in the store);
5. ``rollback``: back to the pre-upgrade snapshot (release debian-ci, P2);
6. the appliance reboots and still answers with P2's probe; shut off, an
   online update is refused.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from builders.derived import DerivedBuildResult
from importer import libvirt_domain
from tests.conftest import appliance_name_for_test, run_cli
from tests.support.fake_build import make_fake_build
from tests.support.libvirtd import running_libvirtd
from tests.support.puddles import (
    HOOK_PACKAGE,
    P1,
    P2,
    P3_BROKEN,
    PROBE_PACKAGE,
    PROBE_VERSION_FILE,
    PuddleSite,
    PuddleSpec,
    TestPackage,
    make_puddles,
)
from undercloud_appliance.manifest import read_manifest

pytestmark = pytest.mark.slow

NAME = appliance_name_for_test("online")
NEXT_RELEASE = "debian-ci-next"
NEXT_PUDDLE = "2026-11-23.1"
UPGRADE_MARKER = "/etc/undercloud-appliance/upgraded-by-test"
TIMEOUT = 30 * 60
REPO_ROOT = Path(__file__).resolve().parents[2]


class Appliance:
    """The imported appliance and the CLI pointed at its state and libvirtd."""

    def __init__(self, uri: str, env: dict[str, str], workdir: Path, store_url: str) -> None:
        self.uri, self.env, self.workdir, self.store_url = uri, env, workdir, store_url

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = run_cli(
            *args,
            "--connect",
            self.uri,
            env=self.env,
            cwd=self.workdir,
            check=check,
            timeout=TIMEOUT,
        )
        print(f"$ undercloud-appliance {' '.join(args)}\n{result.stdout}{result.stderr[-2000:]}")
        return result

    def ssh(self, command: str) -> str:
        return subprocess.run(
            ["ssh", "-F", "ssh.config", "-o", "BatchMode=yes", NAME, command],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout

    def probe_version(self) -> str:
        return self.ssh(f"cat {PROBE_VERSION_FILE}").strip()

    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.ssh("cat /etc/undercloud-appliance/puddle-history.json"))

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", NAME, "--json").stdout)


def next_release_build(p1: DerivedBuildResult, site: PuddleSite, directory: Path) -> Path:
    """A build of the next test release: its manifest carries the next puddles.

    The image is P1's (an upgrade never uses the target's image); what the
    upgrade reads is the manifest: puddle settings, upgrade and smoke commands.
    """
    next_base = site.base_dir / "next"
    if not next_base.exists():
        make_puddles(
            next_base,
            [PuddleSpec(NEXT_PUDDLE, (TestPackage(PROBE_PACKAGE, "3.0"),))],
            labels={"latest": NEXT_PUDDLE},
        )
    build = make_fake_build(directory, NEXT_RELEASE, image_from=p1.output_dir / "undercloud.qcow2")
    manifest = read_manifest(build)
    profile = json.loads(json.dumps(p1.manifest["profile"]))
    profile["name"] = NEXT_RELEASE
    resolved = profile["resolved"]
    resolved["puddle"]["base_url"] = f"{site.url}/next"
    resolved["undercloud"]["upgrade_commands"] = [f"sudo touch {UPGRADE_MARKER}"]
    resolved["undercloud"]["smoke_commands"] = [
        f"test -f {UPGRADE_MARKER}",
        f"grep -qx 3.0 {PROBE_VERSION_FILE}",
    ]
    manifest["profile"] = profile
    manifest["puddle"] = {**p1.manifest["puddle"], "base_url": f"{site.url}/next", "id": None}
    (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return build


@pytest.fixture(scope="module")
def appliance(
    p1_offline_update: tuple[dict[str, str], DerivedBuildResult],
    puddle_site: PuddleSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Appliance]:
    _, p1 = p1_offline_update
    root = tmp_path_factory.mktemp("online-update")
    (root / "store").mkdir()
    store_url = f"file://{root / 'store'}"
    run_cli("publish", str(p1.output_dir), "--store", store_url)
    upgrade_target = next_release_build(p1, puddle_site, root / "next-build")
    run_cli("publish", str(upgrade_target), "--store", store_url)
    run_cli(
        "promote",
        NEXT_RELEASE,
        read_manifest(upgrade_target)["build_id"],
        "--label",
        "latest",
        "--store",
        store_url,
    )
    workdir = root / "work"
    workdir.mkdir()
    env = {
        **os.environ,
        "UNDERCLOUD_APPLIANCE_CACHE": str(root / "cache"),
        "UNDERCLOUD_APPLIANCE_STATE": str(root / "state"),
    }
    with ExitStack() as stack:
        uri = stack.enter_context(running_libvirtd())
        assert libvirt_domain.lookup(libvirt_domain.connect(uri), NAME) is None
        appliance = Appliance(uri, env, workdir, store_url)
        try:
            imported = appliance.cli(
                "import",
                store_url,
                "--release",
                p1.manifest["release"],
                "--build",
                p1.build_id,
                "--name",
                NAME,
                "--network",
                "user",
                "--memory",
                "2560",  # Keystone, Ironic, ironic-inspector
                "--vcpus",
                "2",
                # The update below runs the smoke commands (test_import.py checks the
                # import's): the services start while it installs, not before.
                "--skip-smoke",
            )
            assert "smoke:" not in imported.stdout
            yield appliance
        finally:
            appliance.cli("destroy", NAME, check=False)


def readme_update_walk_through(puddle_dir: Path) -> list[str]:
    """README.rst's "try it" update lines, made runnable here.

    Verbatim but for four replacements, each of which must apply: the
    appliance's name, the puddle directory, and the venv's python and tool
    (this test's interpreter runs the checkout under test).
    """
    text = (REPO_ROOT / "README.rst").read_text()
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", text)
    (block,) = [b for b in blocks if "--puddle-dir" in b and "tests.support.puddles make" in b]
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    replacements = {
        ".venv/bin/undercloud-appliance": f"{sys.executable} -m undercloud_appliance_cli",
        ".venv/bin/python": sys.executable,
        "/srv/puddles": str(puddle_dir),
        "update undercloud ": f"update {NAME} ",
    }
    for old in replacements:
        assert any(old in line for line in lines), f"README's walk-through lost {old!r}"
    # One pass: a replacement's own text is never replaced again.
    pattern = re.compile("|".join(re.escape(old) for old in replacements))
    return [pattern.sub(lambda match: replacements[match.group(0)], line) for line in lines]


@pytest.fixture(scope="module")
def updated_to_p2(appliance: Appliance, tmp_path_factory: pytest.TempPathFactory) -> str:
    """README's update walk-through, run as written: a local tree and --puddle-dir."""
    assert appliance.probe_version() == "1.0"
    puddle_dir = tmp_path_factory.mktemp("readme") / "puddles"
    output = ""
    for line in readme_update_walk_through(puddle_dir):
        print(f"$ {line}")
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", line],
            cwd=REPO_ROOT,
            env={**appliance.env, "LIBVIRT_DEFAULT_URI": appliance.uri},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        print(ran.stdout, ran.stderr[-3000:])
        assert ran.returncode == 0, f"README line failed: {line}\n{ran.stderr[-3000:]}"
        output = ran.stdout
    return output


def test_readme_update_walk_through_moves_the_probe_to_p2_in_place(
    appliance: Appliance, puddle_site: PuddleSite, updated_to_p2: str
) -> None:
    # What update prints: the pinned puddle, the snapshot, the smoke and the diff.
    summary = re.search(
        rf"^{NAME}: updated to puddle {P2} \(from {P1}; snapshot (\S+); "
        r"smoke (\d+)/(\d+) passed\)$",
        updated_to_p2,
        re.MULTILINE,
    )
    assert summary, updated_to_p2
    snapshot, passed, ran = summary.group(1), int(summary.group(2)), int(summary.group(3))
    assert ran > 0 and passed == ran
    assert re.search(rf"^  {PROBE_PACKAGE}\s+1\.0 -> 2\.0$", updated_to_p2, re.MULTILINE)
    assert appliance.probe_version() == "2.0"
    last = appliance.history()[-1]
    assert (last["puddle_id"], last["result"], last["mode"]) == (P2, "ok", "online")
    assert last["requested"] == "latest"
    # The guest fetched P2 from the server --puddle-dir started (not the
    # suite's puddle server), which is gone now that the update is over.
    sources = appliance.ssh("cat /etc/apt/sources.list.d/undercloud-puddle.list")
    served = re.search(rf"http://10\.0\.2\.2:(\d+)/{P2} \./", sources)
    assert served and P1 not in sources, sources
    port = int(served.group(1))
    assert port != urlsplit(puddle_site.url).port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    status = appliance.status()
    assert status["puddle"] == P2 and status["state"] == "running"
    assert [s["name"] for s in status["snapshots"]] == [snapshot]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--puddle", "2099-01-01.1"], "does not exist (HTTP 404)"),
        (["--puddle", "no-such-label"], "does not exist (HTTP 404)"),
        (["--puddle", P2, "--puddle-base", "http://127.0.0.1:9"], "cannot reach"),
        (["--puddle", "latest", "--puddle-dir", "/nonexistent/puddles"], "not a directory"),
    ],
    ids=["unknown-id", "label-resolves-to-nothing", "unreachable", "no-puddle-dir"],
)
def test_bad_update_input_fails_clearly_and_changes_nothing(
    appliance: Appliance, updated_to_p2: str, args: list[str], expected: str
) -> None:
    before = appliance.status()
    failed = appliance.cli("update", NAME, *args, check=False)
    assert failed.returncode != 0
    error_lines = [line for line in failed.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and expected in error_lines[0], failed.stderr
    assert "Traceback" not in failed.stderr
    after = appliance.status()
    assert after["snapshots"] == before["snapshots"], "no snapshot for bad input"
    assert after["puddle"] == P2
    assert appliance.probe_version() == "2.0"


@pytest.fixture(scope="module")
def failed_p3(appliance: Appliance, updated_to_p2: str) -> subprocess.CompletedProcess:
    return appliance.cli("update", NAME, "--puddle", P3_BROKEN, check=False)


def test_broken_puddle_is_reverted_automatically(
    appliance: Appliance, failed_p3: subprocess.CompletedProcess
) -> None:
    assert failed_p3.returncode == 9
    message = failed_p3.stderr.strip().splitlines()[-1]
    assert message.startswith("undercloud-appliance: error: puddle 2026-11-22.1:")
    assert HOOK_PACKAGE in message and f"reverted {NAME} to snapshot" in message
    assert appliance.probe_version() == "2.0"
    last = appliance.history()[-1]
    assert (last["puddle_id"], last["result"]) == (P3_BROKEN, "failed")
    assert HOOK_PACKAGE in last["error"]
    assert appliance.status()["puddle"] == P2
    assert "not-installed" not in appliance.ssh(f"dpkg-query -W -f '${{Status}}' {PROBE_PACKAGE}")


@pytest.fixture(scope="module")
def upgraded(appliance: Appliance, failed_p3: subprocess.CompletedProcess) -> dict[str, Any]:
    return json.loads(appliance.cli("upgrade", NAME, "--to-release", NEXT_RELEASE, "--json").stdout)


def test_upgrade_to_the_next_release(appliance: Appliance, upgraded: dict[str, Any]) -> None:
    assert upgraded["kind"] == "upgrade" and upgraded["release"] == NEXT_RELEASE
    assert upgraded["puddle_id"] == NEXT_PUDDLE
    assert upgraded["diff"]["changed"][PROBE_PACKAGE] == {"before": "2.0", "after": "3.0"}
    assert [r["returncode"] for r in upgraded["smoke"]] == [0, 0]  # the target's smoke
    assert appliance.probe_version() == "3.0"
    status = appliance.status()
    assert (status["release"], status["puddle"]) == (NEXT_RELEASE, NEXT_PUDDLE)


def test_rollback_returns_to_the_pre_upgrade_snapshot_and_survives_a_reboot(
    appliance: Appliance, upgraded: dict[str, Any]
) -> None:
    rolled = appliance.cli("rollback", NAME)
    assert upgraded["snapshot"] in rolled.stdout
    assert appliance.probe_version() == "2.0"
    assert appliance.ssh(f"test -e {UPGRADE_MARKER} && echo yes || echo no").strip() == "no"
    status = appliance.status()
    assert (status["release"], status["puddle"]) == ("debian-ci", P2)

    # Rolled back for good: the disk itself is P2's, so a reboot keeps it.
    connection = libvirt_domain.connect(appliance.uri)
    domain = libvirt_domain.lookup(connection, NAME)
    subprocess.run(
        ["ssh", "-F", "ssh.config", "-o", "BatchMode=yes", NAME, "sudo systemctl reboot"],
        cwd=appliance.workdir,
        capture_output=True,
        timeout=60,
        check=False,
    )
    time.sleep(10)  # let the guest go down before waiting for ssh again
    again = appliance.cli(
        "import",
        appliance.store_url,
        "--release",
        "debian-ci",
        "--build",
        status["build_id"],
        "--name",
        NAME,
    )
    assert "already imported" in again.stdout
    assert appliance.probe_version() == "2.0"
    assert appliance.status()["puddle"] == P2, "a re-import keeps the updated puddle"

    domain.destroy()
    refused = appliance.cli("update", NAME, "--puddle", P2, check=False)
    assert refused.returncode == 9 and "is not running (shut-off)" in refused.stderr
