"""Release profiles: merge rule, provenance, shipped profiles, docs, show output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from builders.profiles import (
    PROFILES_DIR,
    Profile,
    list_profiles,
    load_profile,
    validate_profile_statically,
)
from builders.profiles.layers import Located, merge
from builders.profiles.reference import settings_reference
from builders.profiles.settings import REQUIRED, SETTINGS, Setting
from builders.profiles.show import profile_as_json, profile_as_yaml
from tests.unit.test_profiles_fixtures import make_profiles_dir, write_profile
from undercloud_appliance.errors import ProfileError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = list_profiles(PROFILES_DIR)


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    return make_profiles_dir(tmp_path)


def load_child(profiles_dir: Path, text: str) -> Profile:
    write_profile(profiles_dir, "child", text)
    return load_profile("child", profiles_dir)


# -- the merge rule ------------------------------------------------------------


def test_maps_merge_recursively(profiles_dir: Path) -> None:
    profile = load_child(
        profiles_dir,
        """\
        extends: bases/base
        release: zed
        distro:
          release: bookworm
        image:
          hostname: uc1
        """,
    )
    assert profile.get("distro.family") == "debian"  # from the base
    assert profile.get("distro.release") == "bookworm"  # from the child
    assert profile.get("image.size_gib") == 4
    assert profile.get("image.hostname") == "uc1"


def test_lists_append_base_first(profiles_dir: Path) -> None:
    profile = load_child(
        profiles_dir,
        """\
        extends: bases/base
        release: zed
        distro: {release: bookworm}
        undercloud:
          packages: [child-one, child-two]
        image:
          kernel_args: [quiet]
        """,
    )
    assert profile.get("undercloud.packages") == ["base-package", "child-one", "child-two"]
    assert profile.get("image.kernel_args") == ["console=ttyS0,115200", "quiet"]
    assert profile.origins["undercloud.packages[0]"] == "release-profiles/bases/base.yaml:12"
    assert profile.origins["undercloud.packages[2]"] == "release-profiles/child.yaml:5"


def test_replace_tag_replaces_lists_maps_and_scalars(profiles_dir: Path) -> None:
    profile = load_child(
        profiles_dir,
        """\
        extends: bases/base
        release: !replace "17.1"
        distro: {release: bookworm}
        undercloud:
          packages: !replace [only-this]
        environment: !replace
          DIB_CHILD: "2"
        image:
          size_gib: !replace 10
        """,
    )
    assert profile.get("undercloud.packages") == ["only-this"]
    assert profile.get("environment") == {"DIB_CHILD": "2"}
    assert profile.get("image.size_gib") == 10
    assert profile.get("release") == "17.1"
    assert profile.get("image.kernel_args") == ["console=ttyS0,115200"]  # untouched


def test_maps_without_replace_keep_base_keys(profiles_dir: Path) -> None:
    profile = load_child(
        profiles_dir,
        """\
        extends: bases/base
        release: zed
        distro: {release: bookworm}
        environment:
          DIB_CHILD: "2"
        """,
    )
    assert profile.get("environment") == {"DIB_BASE": "1", "DIB_CHILD": "2"}


def test_three_level_chain_merges_in_order(profiles_dir: Path) -> None:
    write_profile(
        profiles_dir,
        "bases/middle",
        """\
        extends: bases/base
        undercloud:
          packages: [middle-package]
        image:
          size_gib: 6
        """,
    )
    profile = load_child(
        profiles_dir,
        """\
        extends: bases/middle
        release: zed
        distro: {release: bookworm}
        undercloud:
          packages: [child-package]
        """,
    )
    assert profile.get("undercloud.packages") == [
        "base-package",
        "middle-package",
        "child-package",
    ]
    assert profile.get("image.size_gib") == 6
    assert profile.origins["image.size_gib"] == "release-profiles/bases/middle.yaml:5"
    assert profile.get("extends") == "bases/middle"
    assert profile.sources == [
        "release-profiles/bases/base.yaml",
        "release-profiles/bases/middle.yaml",
        "release-profiles/child.yaml",
    ]


def test_merge_of_located_values() -> None:
    base = Located({"a": Located([Located(1, "b:1")], "b:1"), "k": Located("x", "b:2")}, "b:1")
    child = Located({"a": Located([Located(2, "c:1")], "c:1"), "k": Located("y", "c:2")}, "c:1")
    merged = merge(base, child)
    assert [item.value for item in merged.value["a"].value] == [1, 2]
    assert merged.value["k"].value == "y"
    replaced = merge(base, Located({"a": Located([Located(3, "c:1")], "c:1", replace=True)}, "c"))
    assert [item.value for item in replaced.value["a"].value] == [3]


# -- provenance ------------------------------------------------------------------


def test_origins_name_file_and_line(profiles_dir: Path) -> None:
    profile = load_profile("good", profiles_dir)
    assert profile.origins["release"] == "release-profiles/good.yaml:2"
    assert profile.origins["distro.release"] == "release-profiles/good.yaml:4"
    assert profile.origins["distro.family"] == "release-profiles/bases/base.yaml:2"
    assert profile.origins["puddle.repos[0].url"] == "release-profiles/bases/base.yaml:10"
    assert profile.origins["image.kernel_args[0]"] == "release-profiles/bases/base.yaml:16"
    assert profile.origins["image.hostname"] == "(default)"
    assert profile.origins["name"] == "(file name)"
    assert profile.origin("puddle.repos[0].suite") == "(default)"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_origins_point_at_the_right_lines(name: str) -> None:
    profile = load_profile(name)
    for path, origin in profile.origins.items():
        if origin.startswith("("):
            continue
        file, line = origin.rsplit(":", 1)
        text = (REPO_ROOT / file).read_text().splitlines()[int(line) - 1]
        value = profile.get(path)
        if path.endswith("]"):
            if not isinstance(value, dict | list):
                assert str(value) in text, (path, origin, text)
        else:
            key = path.rsplit(".", 1)[-1]
            assert text.lstrip(" -").startswith(f"{key}:"), (path, origin, text)


# -- the shipped profiles ----------------------------------------------------------


def test_shipped_releases() -> None:
    assert {"debian-zed", "debian-ci", "rdo-zed", "rdo-antelope", "osp-17.1"} <= set(SHIPPED)
    assert not any(name.startswith("bases") for name in SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_validates(name: str) -> None:
    profile = load_profile(name)
    validate_profile_statically(profile)
    assert profile.name == name
    assert profile.data["name"] == name
    assert profile.file == PROFILES_DIR / f"{name}.yaml"


def test_rdo_profile_renders_dlrn_aggregate_urls() -> None:
    from undercloud_appliance.puddles import render_repos

    profile = load_profile("rdo-zed")
    puddle_id = "0123456789abcdef0123456789abcdef"
    urls = [repo["url"] for repo in render_repos(profile.data["puddle"], puddle_id, "zed")]
    assert urls == [
        f"https://trunk.rdoproject.org/centos9-zed/01/23/{puddle_id}/delorean.repo",
        "https://trunk.rdoproject.org/centos9-zed/delorean-deps.repo",
    ]


def test_loading_by_path(profiles_dir: Path) -> None:
    profile = load_profile(str(profiles_dir / "good.yaml"), profiles_dir)
    assert profile.name == "good"


def test_bases_are_not_releases(profiles_dir: Path) -> None:
    assert list_profiles(profiles_dir) == ["good"]
    with pytest.raises(ProfileError, match="is a base"):
        load_profile("bases/base", profiles_dir)
    with pytest.raises(ProfileError, match="is a base"):
        load_profile(str(profiles_dir / "bases" / "base.yaml"), profiles_dir)


def test_unknown_release_lists_known_ones(profiles_dir: Path) -> None:
    with pytest.raises(ProfileError, match=r"no release profile 'nope' .*known: good"):
        load_profile("nope", profiles_dir)


def test_profiles_dir_from_environment(profiles_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNDERCLOUD_APPLIANCE_PROFILES", str(profiles_dir))
    assert list_profiles() == ["good"]
    assert load_profile("good").name == "good"


def test_get_with_defaults_and_indexes(profiles_dir: Path) -> None:
    profile = load_profile("good", profiles_dir)
    assert profile.get("puddle.repos[0].name") == "puddle"
    assert profile.get("puddle.repos[5].name", "missing") == "missing"
    assert profile.get("no.such.key") is None
    assert profile.get("puddle.labels.pattern") == r"^(?P<id>\S+)\s*$"


# -- the settings table and its docs ---------------------------------------------------


def test_committed_docs_match_the_settings_table() -> None:
    committed = (REPO_ROOT / "docs" / "profile-settings.rst").read_text(encoding="utf-8")
    assert committed == settings_reference(), (
        "docs/profile-settings.rst is stale: "
        "python -m builders.profiles.reference > docs/profile-settings.rst"
    )


@pytest.mark.parametrize(
    "setting",
    [entry for entry in SETTINGS if isinstance(entry, Setting)],
    ids=lambda setting: setting.key,
)
def test_every_default_passes_its_own_check(setting: Setting) -> None:
    assert setting.doc
    if setting.default is not REQUIRED and not setting.derived:
        setting.kind.check(setting.default, setting.key)


@pytest.mark.parametrize("name", SHIPPED)
def test_builders_find_every_table_setting_in_a_resolved_profile(name: str) -> None:
    # Builders read resolved profiles by the table's keys, without defaults of their own.
    profile = load_profile(name)
    missing = object()
    for setting in (entry for entry in SETTINGS if isinstance(entry, Setting)):
        if setting.only_if is not None and profile.get(setting.only_if[0]) != setting.only_if[1]:
            continue
        if "[]" in setting.key:
            records, field = setting.key.split("[].")
            for record in profile.get(records):
                assert field in record, f"{setting.key} in {record}"
        else:
            assert profile.get(setting.key, missing) is not missing, setting.key


# -- profiles show -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_show_yaml_round_trips_with_an_origin_per_value(name: str) -> None:
    profile = load_profile(name)
    text = profile_as_yaml(profile)
    assert yaml.safe_load(text) == profile.data
    for line in text.splitlines():
        if not line.rstrip().endswith(":"):
            assert "  # " in line, line


def test_show_yaml_quotes_awkward_strings(profiles_dir: Path) -> None:
    profile = load_child(
        profiles_dir,
        """\
        extends: bases/base
        release: "17.1"
        description: "a # not a comment: 'quoted' \\"too\\" \\u00e9"
        distro: {release: "yes"}
        undercloud:
          smoke_commands: ["echo 'x' && true # y", "- starts with dash", "2024-01-01"]
        """,
    )
    assert yaml.safe_load(profile_as_yaml(profile)) == profile.data


def test_show_json(profiles_dir: Path) -> None:
    profile = load_profile("good", profiles_dir)
    shown = json.loads(profile_as_json(profile))
    assert shown["profile"] == profile.data
    assert shown["origins"]["distro.release"] == "release-profiles/good.yaml:4"
