"""Small release profile trees shared by the profile tests (and their own check)."""

from __future__ import annotations

import textwrap
from pathlib import Path

# Line numbers matter: tests name them.
BASE = """\
distro:
  family: debian
  base_element: debian-minimal
  mirror: http://deb.debian.org/debian
puddle:
  package_manager: apt
  id_pattern: '[0-9]{4}-[0-9]{2}-[0-9]{2}\\.[0-9]+'
  repos:
    - name: puddle
      url: "{base_url}/{puddle_id}"
undercloud:
  packages: [base-package]
image:
  size_gib: 4
  kernel_args:
    - console=ttyS0,115200
environment:
  DIB_BASE: "1"
"""

MINIMAL_RELEASE = """\
extends: bases/base
release: zed
distro:
  release: bookworm
"""


def write_profile(profiles_dir: Path, name: str, text: str) -> Path:
    """Write ``<profiles_dir>/<name>.yaml`` (``name`` may be ``bases/x``)."""
    path = profiles_dir / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def make_profiles_dir(root: Path) -> Path:
    """``root/release-profiles`` with ``bases/base`` and a valid ``good`` release."""
    profiles_dir = root / "release-profiles"
    write_profile(profiles_dir, "bases/base", BASE)
    write_profile(profiles_dir, "good", MINIMAL_RELEASE)
    return profiles_dir


def test_fixture_tree_loads(tmp_path: Path) -> None:
    from builders.profiles import load_profile, validate_profile_statically

    profiles_dir = make_profiles_dir(tmp_path)
    validate_profile_statically(load_profile("good", profiles_dir))
