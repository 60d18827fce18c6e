"""Fuzzing the profile loader: it succeeds or raises ProfileError, nothing else.

Three sources of input, each written as ``release-profiles/fuzz.yaml`` next
to a valid base: random nested structures (dumped as YAML) over a release
that extends the base, YAML-ish text built from YAML's special characters,
and random edits of a valid profile.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders.profiles import load_profile, validate_profile_statically
from builders.profiles.settings import SETTINGS
from builders.profiles.show import profile_as_json, profile_as_yaml
from tests.unit.test_profiles_fixtures import MINIMAL_RELEASE, make_profiles_dir
from undercloud_appliance.errors import ProfileError

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Setting names the structures draw keys from, so inputs reach deep checks:
# every part of every key in the settings table (``puddle.repos[].url`` gives
# ``puddle``, ``repos`` and ``url``), and a key of the ``environment`` map.
SETTING_NAMES = {part for entry in SETTINGS for part in re.split(r"\[\]\.?|\.", entry.key) if part}
KEYS = [*sorted(SETTING_NAMES), "DIB_RELEASE"]
SCALAR_TEXT = [
    "debian",
    "centos",
    "apt",
    "dnf",
    "bases/base",
    "bases/nope",
    "fuzz",
    "../fuzz",
    "{base_url}/{puddle_id}",
    "{puddle_id[0:2]}",
    "{label}",
    "{nope}",
    "(?P<id>x)",
    "([",
    "http://example.invalid/x",
    "none",
    "qcow2",
    "",
]
YAML_PIECES = [
    "\n",
    "  ",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "'",
    '"',
    "#",
    "&a ",
    "*a",
    "!replace ",
    "!!int ",
    "!!binary ",
    "!!timestamp ",
    "!foo ",
    "<<: ",
    "? ",
    "|\n",
    ">\n",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "\t",
    "\x00",
    "\ufeff",
    "\x85",
    "~",
    "null",
    "yes",
    "1e9",
    "0x1f",
    "2024-01-01",
    *KEYS,
    *SCALAR_TEXT,
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.sampled_from(SCALAR_TEXT)
    | st.text(max_size=20)
)
keys = st.sampled_from(KEYS) | st.text(max_size=8)
structures = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


@pytest.fixture(scope="module")
def profiles_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as root:
        yield make_profiles_dir(Path(root))


def load_and_check(profiles_dir: Path, text: str) -> None:
    """Load fuzz.yaml; on success the result must also validate or fail cleanly."""
    (profiles_dir / "fuzz.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        profile = load_profile("fuzz", profiles_dir)
    except ProfileError as error:
        assert "\n" not in str(error)
        return
    # A profile that loads can always be shown.
    profile_as_json(profile)
    assert yaml.safe_load(profile_as_yaml(profile)) == profile.data
    try:
        validate_profile_statically(profile)
    except ProfileError as error:
        assert "\n" not in str(error)


@FUZZ
@given(overrides=st.dictionaries(keys, structures, max_size=6))
def test_random_structures_over_a_valid_release(profiles_dir: Path, overrides: dict) -> None:
    document = {**yaml.safe_load(MINIMAL_RELEASE), **overrides}
    load_and_check(profiles_dir, yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(document=structures)
def test_random_structures_as_a_whole_file(profiles_dir: Path, document: object) -> None:
    load_and_check(profiles_dir, yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(pieces=st.lists(st.sampled_from(YAML_PIECES) | st.text(max_size=3), max_size=40))
def test_yamlish_text(profiles_dir: Path, pieces: list[str]) -> None:
    load_and_check(profiles_dir, "".join(pieces))


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(0, 3), st.sampled_from(YAML_PIECES)),
        min_size=1,
        max_size=4,
    )
)
def test_edits_of_a_valid_profile(profiles_dir: Path, edits: list[tuple[int, int, str]]) -> None:
    text = MINIMAL_RELEASE + "undercloud:\n  packages: !replace [a, b]\nimage:\n  size_gib: 9\n"
    for position, deleted, inserted in edits:
        at = position % (len(text) + 1)
        text = text[:at] + inserted + text[at + deleted :]
    load_and_check(profiles_dir, text)
