"""What a build is made from, as one digest: the key of the build caches.

Two caches use it: the Ironic images' (``ironic_images.cache_key``: one
entry per set of inputs in the build cache) and the appliance's own (a
build directory whose manifest records the same ``input_digest`` is
reused by ``build --replace``, see ``builders.build``).  Both hash files
with ``add_tree``, so a file read the same way gives the same key in both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builders.dib import ELEMENTS_DIR, REPO_ROOT

# Bumped when what goes into the digest changes meaning: an old manifest's
# digest must never match a new one by accident.
APPLIANCE_DIGEST_VERSION = b"undercloud-appliance build inputs 1\0"
RECIPE_DIGEST_VERSION = b"undercloud-appliance build recipe 1\0"
# How the image is made, besides the profile and the elements: the builder's
# own code and data (steps, disk assembly, bake, seal, block-device layout,
# constraints) and the list of secrets the seal removes.
APPLIANCE_RECIPE = (
    REPO_ROOT / "builders",
    REPO_ROOT / "undercloud_appliance" / "sealed_secrets.py",
)
# Byte-compiled copies change with a file's mtime, not its content.
SKIPPED_DIRECTORIES = ("__pycache__",)


def add_tree(digest: Any, path: Path) -> None:
    """Every file under ``path`` (its relative name and bytes) in a fixed order.

    ``path`` may be a single file (then named by its file name).
    """
    if path.is_file():
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
        return
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part in SKIPPED_DIRECTORIES for part in relative.parts[:-1]):
            continue
        digest.update(str(relative).encode() + b"\0")
        digest.update(file.read_bytes())


def add_json(digest: Any, value: Any) -> None:
    """A JSON value, keys sorted: the same data always hashes the same."""
    digest.update(json.dumps(value, sort_keys=True, default=str).encode() + b"\0")


@dataclass(frozen=True)
class ApplianceInputs:
    """Everything that decides an appliance image, known before DIB runs.

    The distro's base element comes with diskimage-builder (its version);
    the packages it installs come from the distro mirror at build time and
    are not pinned: a build with the same inputs a month later would pick
    up the mirror's newer packages, which is what ``build --rebuild`` is for.
    """

    profile: Mapping[str, Any]  # the resolved profile (after ``extends``)
    puddle: Mapping[str, Any]  # the puddle settings in effect (``--puddle-base`` applied)
    puddle_id: str | None  # the pinned id: a label resolved anew changes it
    repos: Sequence[Mapping[str, Any]]
    elements: Sequence[str]  # as passed to disk-image-create, in order
    bake: bool
    dib_version: str
    ironic_image_keys: Mapping[str, str]  # kind -> ironic_images.cache_key
    elements_dir: Path = ELEMENTS_DIR
    recipe: Sequence[Path] = field(default=APPLIANCE_RECIPE)

    def digest(self) -> str:
        """``sha256:<hex>`` of all of it."""
        return self._digest(APPLIANCE_DIGEST_VERSION, with_puddle=True)

    def recipe_digest(self) -> str:
        """``sha256:<hex>`` of all of it but the puddle: what a derived build keeps.

        Two builds with the same recipe digest differ in their packages'
        versions only, which a derived build brings up to date; ``nightly``
        derives from the last build only then.
        """
        return self._digest(RECIPE_DIGEST_VERSION, with_puddle=False)

    def _digest(self, version: bytes, with_puddle: bool) -> str:
        digest = hashlib.sha256(version)
        inputs: dict[str, Any] = {
            "profile": self.profile,
            "elements": list(self.elements),
            "bake": self.bake,
            "dib_version": self.dib_version,
            "ironic_image_keys": dict(self.ironic_image_keys),
        }
        if with_puddle:
            inputs |= {
                "puddle": self.puddle,
                "puddle_id": self.puddle_id,
                "repos": list(self.repos),
            }
        else:
            inputs["profile"] = {k: v for k, v in self.profile.items() if k != "puddle"}
        add_json(digest, inputs)
        # Every element of ours, not only those named: elements depend on
        # each other (element-deps), and the Ironic images built from some
        # of them are copied into the appliance.
        add_tree(digest, self.elements_dir)
        for path in self.recipe:
            add_tree(digest, path)
        return f"sha256:{digest.hexdigest()}"
