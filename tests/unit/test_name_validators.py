"""Names that end up in paths, URLs and guest commands are matched whole.

``re.match`` with a trailing ``$`` accepts a trailing newline (a label
``"evil\\n"`` was created on a store): every validator must refuse one.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.appliance_state import check_name
from importer.cache import check_sha256
from importer.signature import normalise_fingerprint
from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.store_layout import check_build_id, check_label, check_release

VALID = [
    (check_name, "undercloud-1"),
    (check_release, "debian-zed"),
    (check_build_id, "20261203T035716Z-500554"),
    (check_label, "latest"),
    (check_sha256, "a" * 64),
    (normalise_fingerprint, "0123456789ABCDEF0123456789ABCDEF01234567"),
]


@pytest.mark.parametrize(("check", "value"), VALID, ids=[c.__name__ for c, _ in VALID])
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\n\n"])
def test_a_trailing_newline_is_refused(check, value: str, suffix: str) -> None:
    assert check(value)  # the name itself is fine
    with pytest.raises(ApplianceError):
        check(value + suffix)


@given(text=st.text(min_size=1, max_size=80))
def test_a_label_that_passes_is_one_safe_path_component(text: str) -> None:
    try:
        label = check_label(text)
    except ApplianceError:
        return
    assert label == text
    assert "/" not in label and ".." not in label
    assert not any(character.isspace() for character in label)
