"""SIGKILL publish and promote at ~20 random points; the store stays consistent.

Runs against every store: file://, nginx WebDAV and sshd (rsync), checking
the files in the directory the server keeps them in.

After every kill: each entry under its final name is a complete build whose
files pass the real ``sha256sum -c`` / ``md5sum -c``, and the ``current``
label resolves to such a build.  The image is large enough (48 MiB of
random data) that kills land inside the copy, the checksum files, the
directory commit and the label switch.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support.fake_build import make_fake_build
from tests.support.nginx import NginxServer
from tests.support.sshd import SshServer
from undercloud_appliance.manifest import new_build_id
from undercloud_appliance.store_layout import (
    BUILD_ID_NAME,
    BUILD_ID_PATTERN,
    MD5_NAME,
    SUMS_NAME,
    build_files,
)

RELEASE = "debian-ci"
KILLS = 20


def publish_and_promote(
    store: str, build: Path, build_id: str, env: dict[str, str]
) -> subprocess.Popen:
    command = (
        f"{sys.executable} -m undercloud_appliance_cli -q publish {build} --store {store} && "
        f"{sys.executable} -m undercloud_appliance_cli -q promote {RELEASE} {build_id} "
        f"--label current --store {store}"
    )
    return subprocess.Popen(
        ["sh", "-c", command],
        start_new_session=True,  # its own process group: we kill all of it
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def assert_store_consistent(release_dir: Path, verified: set[str] | None = None) -> list[str]:
    """Every visible build verifies; the label resolves to one. Returns build ids.

    ``verified`` caches build directories already checked: nothing in this
    test changes a build directory once it is visible, so one check each is
    enough (labels are always re-checked).
    """
    verified = set() if verified is None else verified
    builds = []
    for entry in sorted(release_dir.iterdir()):
        if entry.name.startswith("."):
            continue  # hidden staging names: invisible to readers by contract
        if entry.name in verified:
            builds.append(entry.name)
            continue
        if BUILD_ID_PATTERN.match(entry.name):
            missing = [name for name in build_files() if not (entry / name).is_file()]
            assert not missing, f"{entry} visible but incomplete: {missing}"
            builds.append(entry.name)
        for command in (["sha256sum", "-c", SUMS_NAME], ["md5sum", "-c", MD5_NAME]):
            result = subprocess.run(command, cwd=entry, capture_output=True, text=True)
            assert result.returncode == 0, f"{entry}: {command}: {result.stdout}{result.stderr}"
        manifest = json.loads((entry / "manifest.json").read_text())
        assert manifest["build_id"] == (entry / BUILD_ID_NAME).read_text().strip()
        if BUILD_ID_PATTERN.match(entry.name):
            verified.add(entry.name)
    label_target = (release_dir / "current" / BUILD_ID_NAME).read_text().strip()
    assert label_target in builds
    return builds


def kill_outcome(release_dir: Path, build_id: str, returncode: int) -> str:
    staging = [
        p for p in (release_dir / ".staging").iterdir() if p.name.startswith(f"{build_id}.tmp-")
    ]
    label = (release_dir / "current" / BUILD_ID_NAME).read_text().strip()
    if returncode == 0:
        return "after everything"
    if staging:
        return "during publish (staging left)"
    if not (release_dir / build_id).exists():
        return "before staging"
    if label == build_id:
        return "after the label moved"
    return "after publish, before the label moved"


@pytest.fixture(params=["file", "webdav", "ssh"])
def crash_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, dict]]:
    """(URL, directory where the server keeps the files, environment)."""
    root = tmp_path / "store"
    root.mkdir()
    if request.param == "file":
        yield f"file://{root}", root, dict(os.environ)
        return
    if request.param == "ssh":
        with SshServer() as sshd:
            env = {**os.environ, "UNDERCLOUD_APPLIANCE_SSH_COMMAND": sshd.ssh_command}
            yield sshd.url(root), root, env
        return
    # A killed promotion leaves its WebDAV lock behind until it expires.
    with NginxServer(root, dav=True, dav_lock_timeout=5) as server:
        yield f"{server.url}/", root, dict(os.environ)


def test_sigkill_never_leaves_partial_files(
    tmp_path: Path, crash_store: tuple[str, Path, dict]
) -> None:
    store, store_root, env = crash_store
    source = make_fake_build(tmp_path / "source", RELEASE, data_mib=48)
    image = source / "undercloud.qcow2"

    def new_build(n: int) -> tuple[Path, str]:
        build_id = new_build_id()
        return make_fake_build(tmp_path / f"b{n}", RELEASE, build_id, image_from=image), build_id

    # A good build behind the label, and the time one full (warm) cycle takes.
    cycles = []
    for n in (-2, -1):
        build, build_id = new_build(n)
        started = time.monotonic()
        process = publish_and_promote(store, build, build_id, env)
        assert process.wait(timeout=300) == 0, process.stderr.read()
        cycles.append(time.monotonic() - started)
    cycle = min(cycles)

    seed = int(os.environ.get("CRASH_TEST_SEED", random.randrange(1 << 30)))
    chooser = random.Random(seed)
    print(f"crash test seed {seed}, one cycle {cycle:.2f}s")
    outcomes: Counter[str] = Counter()
    verified: set[str] = set()
    for n in range(1, KILLS + 1):
        build, build_id = new_build(n)
        process = publish_and_promote(store, build, build_id, env)
        delay = chooser.uniform(0.0, cycle)
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        returncode = process.wait(timeout=60)
        builds = assert_store_consistent(store_root / RELEASE, verified)
        if returncode == 0:
            assert build_id in builds
        outcomes[kill_outcome(store_root / RELEASE, build_id, returncode)] += 1
        (build / "undercloud.qcow2").unlink()  # hard links: free nothing, keep tmp tidy

    print(f"{KILLS} kills landed: {dict(outcomes)}")
    # Guard against a vacuous test: some kills must hit a publish mid-way
    # (the upload is most of a cycle, so missing it 20 times is ~never).
    assert outcomes["during publish (staging left)"] >= 1
    # The store still works afterwards: list, prune (clears label copies), promote.
    listing = json.loads(run_cli("list", "--json", "--store", store, env=env).stdout)
    assert listing["releases"][0]["labels"]["current"]
    run_cli("prune", RELEASE, "--keep", "2", "--store", store, env=env)
    assert_store_consistent(store_root / RELEASE)
