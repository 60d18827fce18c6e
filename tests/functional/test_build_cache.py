"""``build --replace`` of the same inputs into the same output is a cache hit.

The input digest comes from the real build code (the CLI's own preparing
steps, or ``prepare_build`` for ``debian-ci``); the build directory it is
checked against is a small fake one (``make_fake_build``) whose manifest
records that digest: a real build takes 15 minutes, the cache's decision
does not depend on what the image holds beyond its size and sha256.

A miss must run the build: the probe profile's distro mirror is an empty
directory served on 127.0.0.1 (it answers, so ``build`` takes the host for
one that can build the profile), and its DIB run fails at debootstrap
within seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from builders.build import prepare_build
from tests.conftest import REPO_ROOT, run_cli
from tests.support.fake_build import file_digests, make_fake_build
from tests.support.puddles import serve_directory
from undercloud_appliance.manifest import Manifest

PROBE_PROFILE = """\
extends: debian-ci
distro:
  # An empty mirror: DIB fails at debootstrap, seconds after the cache's decision.
  mirror: {mirror}
ironic_images:
  agent_version: ""
"""
DIGEST_LINE = re.compile(r"input digest: (sha256:[0-9a-f]{64})")
HIT = "build cache hit"


def seed_build(output: Path, input_digest: str) -> str:
    """A finished build directory whose manifest records ``input_digest``; its build id."""
    make_fake_build(output)
    manifest = Manifest.read(output)
    manifest.input_digest = input_digest
    manifest.write(output)
    return manifest.build_id


def listing(directory: Path) -> dict[str, tuple[float, int]]:
    """Every entry under ``directory``: mtime and size (a hit touches nothing)."""
    return {
        str(path.relative_to(directory)): (path.stat().st_mtime, path.stat().st_size)
        for path in directory.rglob("*")
    }


def test_second_build_of_the_same_inputs_is_a_hit_and_a_changed_input_is_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "empty-mirror").mkdir()
    with serve_directory(tmp_path / "empty-mirror") as mirror:
        check_hits_and_misses(tmp_path, PROBE_PROFILE.format(mirror=f"{mirror}/debian"))


def check_hits_and_misses(tmp_path: Path, probe_profile: str) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO_ROOT / "release-profiles", profiles)
    (profiles / "cache-probe.yaml").write_text(probe_profile)
    env = {
        **os.environ,
        "UNDERCLOUD_APPLIANCE_PROFILES": str(profiles),
        "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache"),
    }
    output = tmp_path / "out" / "build"

    def build(*options: str):
        return run_cli(
            "build", "cache-probe", "--output", str(output), "--replace", *options,
            env=env, check=False, timeout=600,
        )  # fmt: skip

    first = build()
    assert first.returncode == 3, first.stderr
    assert "run-diskimage-builder" in first.stderr, "nothing to reuse: the build runs"
    (input_digest,) = DIGEST_LINE.findall(first.stderr)
    assert f"input digest {input_digest}" in (output.parent / "build.failed.log").read_text()

    build_id = seed_build(output, input_digest)
    before, contents = listing(output.parent), file_digests(output)
    started = time.monotonic()
    second = build()
    print(f"cache hit in {time.monotonic() - started:.1f} s")
    assert second.returncode == 0, second.stderr
    hit_lines = [line for line in second.stderr.splitlines() if HIT in line]
    assert len(hit_lines) == 1 and build_id in hit_lines[0], second.stderr
    assert "render-appliance-data" not in second.stderr, "a hit runs no build step"
    assert second.stdout.strip() == str(output)
    assert listing(output.parent) == before and file_digests(output) == contents

    rebuilt = build("--rebuild")
    assert rebuilt.returncode == 3 and HIT not in rebuilt.stderr
    assert "run-diskimage-builder" in rebuilt.stderr, "--rebuild builds anyway"
    assert file_digests(output) == contents, "a failed build leaves the old one as it was"

    (profiles / "cache-probe.yaml").write_text(probe_profile + "image:\n  hostname: changed\n")
    changed = build()
    assert changed.returncode == 3 and HIT not in changed.stderr
    assert f"input digest differs from {output}'s build {build_id}" in changed.stderr
    assert "run-diskimage-builder" in changed.stderr
    assert file_digests(output) == contents


def test_debian_ci_build_of_the_recorded_inputs_is_a_hit(tmp_path: Path) -> None:
    """The CLI takes the digest the build code computes for debian-ci for its own."""
    context, _ = prepare_build("debian-ci")
    assert context.input_digest is not None
    output = tmp_path / "build"
    build_id = seed_build(output, context.input_digest)
    started = time.monotonic()
    result = run_cli(
        "build", "debian-ci", "--output", str(output), "--replace",
        env={**os.environ, "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache")}, timeout=600,
    )  # fmt: skip
    print(f"cache hit in {time.monotonic() - started:.1f} s")
    assert f"{HIT}: {output} holds build {build_id}" in result.stderr, result.stderr
    assert "render-appliance-data" not in result.stderr
    assert not (tmp_path / "cache").exists(), "a hit builds nothing, not even a cache"
