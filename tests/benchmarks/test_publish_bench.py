"""Publishing a 2 GiB image to file:// vs ``cp`` + ``sha256sum`` + ``md5sum``.

Goal: publish takes <= 0.55x the baseline, because it reads the image once
and hashes in parallel with the copy.  The ratio is printed, never asserted
(timings depend on the machine).  ``UNDERCLOUD_APPLIANCE_BENCH_MIB`` sets
the size (default 2048).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fake_build import fake_manifest

pytestmark = pytest.mark.benchmark

SIZE_MIB = int(os.environ.get("UNDERCLOUD_APPLIANCE_BENCH_MIB", "2048"))
GOAL = 0.55


def write_image(path: Path, size_mib: int) -> None:
    """Incompressible data; a repeated 64 MiB random block is as hard to hash."""
    block = os.urandom(64 * 1024 * 1024)
    with path.open("wb") as handle:
        for _ in range(size_mib // 64):
            handle.write(block)
        handle.write(block[: (size_mib % 64) * 1024 * 1024])


def timed(command: list[str], **kwargs) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.monotonic() - started


def test_publish_vs_cp_sha256sum_md5sum(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    image = build / "undercloud.qcow2"
    write_image(image, SIZE_MIB)
    manifest = fake_manifest(image, "bench")
    (build / "manifest.json").write_text(json.dumps(manifest))
    (build / "build.log").write_text("benchmark\n")
    store = tmp_path / "store"
    store.mkdir()
    copy = tmp_path / "copy.qcow2"

    timed(["cat", str(image)])  # same page-cache state for both contenders
    cp = timed(["cp", str(image), str(copy)])
    sha256 = timed(["sha256sum", str(image)])
    md5 = timed(["md5sum", str(image)])
    baseline = cp + sha256 + md5
    copy.unlink()

    cli = [sys.executable, "-m", "undercloud_appliance_cli", "-q"]
    publish = timed([*cli, "publish", str(build), "--store", f"file://{store}"])
    published = store / "bench" / manifest["build_id"]
    assert (published / "undercloud.qcow2").stat().st_size == image.stat().st_size
    sums = (published / "SHA256SUMS").read_text()
    assert manifest["image"]["sha256"] in sums

    ratio = publish / baseline
    print(
        f"\npublish {SIZE_MIB} MiB to file://: {publish:.2f}s; baseline cp {cp:.2f}s + "
        f"sha256sum {sha256:.2f}s + md5sum {md5:.2f}s = {baseline:.2f}s; "
        f"ratio {ratio:.2f} (goal <= {GOAL}); publish also fsyncs, cp does not; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
