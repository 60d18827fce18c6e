"""A manifest is what a store serves: a ManifestError or a manifest the importer can use.

Random edits of a valid manifest (values of any JSON type at any path the
importer reads, fields deleted) and random text, as tests/unit/test_profile_fuzz.py
does for profiles: never a traceback, never a value of the wrong type
reaching the code that runs commands in the guest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.smoke import smoke_commands
from tests.support.fake_build import fake_manifest, write_random_qcow2
from undercloud_appliance.manifest import ManifestError, parse_manifest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# Paths into the manifest the importer reads, top-level fields included.
PATHS = [
    ("build_id",),
    ("format_version",),
    ("image",),
    ("image", "sha256"),
    ("image", "file_size"),
    ("profile",),
    ("profile", "resolved"),
    ("profile", "resolved", "undercloud"),
    ("profile", "resolved", "undercloud", "smoke_commands"),
    ("profile", "resolved", "undercloud", "update_commands"),
    ("profile", "resolved", "provisioning"),
    ("smoke",),
    ("ironic_images",),
]


@pytest.fixture(scope="module")
def valid_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    image = tmp_path_factory.mktemp("manifest-fuzz") / "undercloud.qcow2"
    write_random_qcow2(image, data_mib=1)
    manifest = fake_manifest(image)
    manifest["profile"]["resolved"] = {
        "undercloud": {"smoke_commands": ["openstack token issue"], "update_commands": []},
        "provisioning": {"interface": "eth1"},
    }
    return manifest


def set_path(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        if not isinstance(document.get(name), dict):
            document[name] = {}
        document = document[name]
    if value is DELETE:
        document.pop(path[-1], None)
    else:
        document[path[-1]] = value


DELETE = object()


def parsed_or_refused(text: str) -> dict[str, Any] | None:
    try:
        return parse_manifest(text, "store/manifest.json")
    except ManifestError as error:
        assert str(error).startswith("store/manifest.json"), "the error names the file"
        assert "\n" not in str(error)
        return None


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), json_values | st.just(DELETE)), max_size=4))
def test_edited_manifests_are_refused_or_usable(
    valid_manifest: dict[str, Any], edits: list[tuple[tuple[str, ...], Any]]
) -> None:
    document = json.loads(json.dumps(valid_manifest))
    for path, value in edits:
        set_path(document, path, value)
    manifest = parsed_or_refused(json.dumps(document))
    if manifest is not None:
        assert all(isinstance(command, str) for command in smoke_commands(manifest))


@given(text=st.text(max_size=200) | st.builds(lambda n: "[" * n + "]" * n, st.integers(0, 10**5)))
def test_any_text_is_refused_or_parsed(text: str) -> None:
    parsed_or_refused(text)


def test_deep_nesting_is_refused_in_one_line() -> None:
    # Found by the fuzzer: json.loads raised RecursionError (an "internal error").
    assert parsed_or_refused("[" * 100_000) is None


def test_a_command_list_of_objects_is_refused(valid_manifest: dict[str, Any]) -> None:
    document = json.loads(json.dumps(valid_manifest))
    document["profile"]["resolved"]["undercloud"]["smoke_commands"] = [{"rm": "-rf /"}]
    with pytest.raises(ManifestError, match="smoke_commands' must list strings"):
        parse_manifest(json.dumps(document))


def test_the_valid_manifest_parses(valid_manifest: dict[str, Any], tmp_path: Path) -> None:
    assert parsed_or_refused(json.dumps(valid_manifest)) == valid_manifest
