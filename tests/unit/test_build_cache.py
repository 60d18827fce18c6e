"""The build's input digest and the build cache it keys (builders/input_digest.py, build.py)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import pytest

from builders.build import BuildContext, appliance_inputs, reusable_build, step_digest_inputs
from builders.dib import ELEMENTS_DIR
from builders.input_digest import ApplianceInputs
from builders.profiles import load_profile
from tests.support.fake_build import make_fake_build
from undercloud_appliance.manifest import Manifest


@pytest.fixture
def elements(tmp_path: Path) -> Path:
    """A copy of the project's elements, free to change."""
    copy = tmp_path / "elements"
    shutil.copytree(ELEMENTS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def debian_ci_inputs(elements: Path, puddle_id: str | None = None) -> ApplianceInputs:
    """The inputs the build code takes for debian-ci, with its elements from ``elements``."""
    context = BuildContext(load_profile("debian-ci"), Path(), None, None)
    context.puddle_id = puddle_id
    step_digest_inputs(context)
    return dataclasses.replace(appliance_inputs(context), elements_dir=elements)


def test_same_inputs_same_digest(elements: Path) -> None:
    first = debian_ci_inputs(elements).digest()
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert debian_ci_inputs(elements).digest() == first
    # Byte-compiled copies say nothing about the content.
    (elements / "debian-undercloud" / "__pycache__").mkdir()
    (elements / "debian-undercloud" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert debian_ci_inputs(elements).digest() == first


def test_changed_element_file_changes_digest(elements: Path) -> None:
    before = debian_ci_inputs(elements).digest()
    script = next(p for p in sorted((elements / "debian-undercloud").rglob("*")) if p.is_file())
    script.write_bytes(script.read_bytes() + b"\n# changed\n")
    assert debian_ci_inputs(elements).digest() != before


def test_new_element_file_changes_digest(elements: Path) -> None:
    before = debian_ci_inputs(elements).digest()
    (elements / "appliance-boot" / "install.d" / "99-new").write_text("#!/bin/bash\n")
    assert debian_ci_inputs(elements).digest() != before


def test_changed_profile_changes_digest(elements: Path) -> None:
    inputs = debian_ci_inputs(elements)
    profile = dict(inputs.profile, image={**inputs.profile["image"], "size_gib": 7})
    assert dataclasses.replace(inputs, profile=profile).digest() != inputs.digest()
    zed = BuildContext(load_profile("debian-zed"), Path(), None, None)
    step_digest_inputs(zed)
    assert dataclasses.replace(appliance_inputs(zed), elements_dir=elements).digest() != (
        inputs.digest()
    )


def test_pinned_puddle_id_changes_digest(elements: Path) -> None:
    # A label resolved to a new id is a new pinned id.
    assert (
        debian_ci_inputs(elements, "2026-11-21.1").digest()
        != debian_ci_inputs(elements, "2026-11-22.1").digest()
        != debian_ci_inputs(elements).digest()
    )


def test_recipe_digest_leaves_out_the_puddle_only(elements: Path) -> None:
    """What nightly derives from: another puddle is the same recipe, an element change is not."""
    p1 = debian_ci_inputs(elements, "2026-11-21.1")
    p2 = debian_ci_inputs(elements, "2026-11-22.1")
    moved = dict(p2.profile, puddle={**p2.profile["puddle"], "base_url": "http://127.0.0.1:1"})
    p2 = dataclasses.replace(p2, profile=moved, puddle=moved["puddle"])
    assert p1.digest() != p2.digest()
    assert p1.recipe_digest() == p2.recipe_digest() != p1.digest()
    resized = dict(p1.profile, image={**p1.profile["image"], "size_gib": 7})
    assert dataclasses.replace(p1, profile=resized).recipe_digest() != p1.recipe_digest()
    before = p1.recipe_digest()  # files are read when the digest is taken
    script = next(p for p in sorted((elements / "debian-undercloud").rglob("*")) if p.is_file())
    script.write_bytes(script.read_bytes() + b"\n# changed\n")
    assert debian_ci_inputs(elements, "2026-11-21.1").recipe_digest() != before


def test_bake_dib_version_and_ironic_images_change_digest(elements: Path) -> None:
    inputs = debian_ci_inputs(elements)
    assert inputs.ironic_image_keys, "debian-ci builds the Ironic images"
    changed = [
        dataclasses.replace(inputs, bake=False),
        dataclasses.replace(inputs, dib_version="0.0.0"),
        dataclasses.replace(inputs, ironic_image_keys={"ramdisk": "0" * 16}),
        dataclasses.replace(inputs, elements=[*inputs.elements, "extra"]),
    ]
    assert inputs.digest() not in {other.digest() for other in changed}


def test_builder_code_changes_digest(elements: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.py"
    recipe.write_text("STEPS = 1\n")
    inputs = dataclasses.replace(debian_ci_inputs(elements), recipe=[recipe])
    before = inputs.digest()
    recipe.write_text("STEPS = 2\n")
    assert inputs.digest() != before


# -- the build cache: a build directory whose manifest records the digest ------


def fake_build_with_digest(directory: Path, digest: str | None) -> Manifest:
    make_fake_build(directory)
    manifest = Manifest.read(directory)
    manifest.input_digest = digest
    manifest.write(directory)
    return manifest


def test_intact_build_of_the_same_inputs_is_reused(tmp_path: Path) -> None:
    manifest = fake_build_with_digest(tmp_path / "build", "sha256:" + "1" * 64)
    assert reusable_build(tmp_path / "build", "sha256:" + "1" * 64) == manifest.build_id


RECORDED = "sha256:" + "2" * 64


def overwrite_image_header(build: Path) -> None:
    with (build / "undercloud.qcow2").open("r+b") as image:
        image.write(b"QFI\xfb!")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda build: None, "input digest differs"),
        (lambda build: fake_build_with_digest(build, None), "records no input digest"),
        (lambda build: (build / "undercloud.qcow2").unlink(), "does not match its manifest"),
        (overwrite_image_header, "does not match its manifest"),
        (lambda build: (build / "manifest.json").write_text("{"), "not valid JSON"),
    ],
)
def test_other_or_damaged_build_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change, reason: str
) -> None:
    build = tmp_path / "build"
    fake_build_with_digest(build, RECORDED)
    change(build)
    asked = "sha256:" + "3" * 64 if reason == "input digest differs" else RECORDED
    with caplog.at_level(logging.INFO):
        assert reusable_build(build, asked) is None
    assert reason in caplog.text and "rebuilding" in caplog.text


def test_empty_or_missing_output_is_no_hit(tmp_path: Path) -> None:
    assert reusable_build(tmp_path / "absent", "sha256:" + "1" * 64) is None
    assert reusable_build(tmp_path, "sha256:" + "1" * 64) is None
