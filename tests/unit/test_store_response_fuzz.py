"""What a store serves besides the manifest, fuzzed: checksum files and gpg's verdict on them.

A hostile store chooses every byte of ``SHA256SUMS`` and its signature;
the parsers must answer with a ChecksumError naming the file, or with
names and digests that are what they claim to be, and the signature check
must accept nothing but a good signature by the trusted key.
(tests/functional/test_store_trust.py serves each attack for real.)
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from importer.published_build import signed_listing
from importer.signature import REFUSING_STATUS, signature_problem
from undercloud_appliance.checksum_files import parse_sums
from undercloud_appliance.errors import ChecksumError
from undercloud_appliance.store_layout import SIGNED_NAMES

TRUSTED = "0123456789ABCDEF0123456789ABCDEF01234567"
OTHER = "89ABCDEF0123456789ABCDEF0123456789ABCDEF"
HEX = "0123456789abcdef"
HEX64 = st.text(HEX, min_size=64, max_size=64) | st.text(HEX + "ABX", min_size=60, max_size=66)
NAMES = st.sampled_from([*SIGNED_NAMES, "../manifest.json", "a/b", "", " x", "x y"]) | st.text(
    max_size=12
)
checksum_lines = st.builds(
    lambda digest, separator, name: f"{digest}{separator}{name}",
    HEX64,
    st.sampled_from(["  ", " *", " ", "\t"]),
    NAMES,
)
checksum_texts = st.lists(
    st.one_of(checksum_lines, checksum_lines, st.text(max_size=20)), max_size=6
).map("\n".join)


@settings(max_examples=500)
@given(text=checksum_texts)
def test_checksum_files_parse_to_bare_names_and_sha256s_or_are_refused(text: str) -> None:
    try:
        listed = parse_sums(text, "store/SHA256SUMS")
    except ChecksumError as error:
        assert str(error).startswith("store/SHA256SUMS") and "\n" not in str(error)
        return
    for name, digest in listed.items():
        assert name and "/" not in name and name == name.strip(), name
        assert re.fullmatch("[0-9a-f]{64}", digest)


@given(sums=st.binary(max_size=300) | checksum_texts.map(str.encode))
def test_a_signed_listing_names_every_signed_file_or_is_refused(sums: bytes) -> None:
    try:
        listed = signed_listing(sums, "store/SHA256SUMS")
    except ChecksumError:
        return
    assert set(SIGNED_NAMES) <= set(listed)


STATUS_WORDS = ["GOODSIG", "VALIDSIG", "NEWSIG", "TRUST_UNDEFINED", *REFUSING_STATUS]
status_lines = st.builds(
    lambda prefix, word, fields: " ".join([prefix, word, *fields]),
    st.sampled_from(["[GNUPG:]"] * 6 + ["gpg:", ""]),
    st.sampled_from(STATUS_WORDS),
    st.lists(st.sampled_from([TRUSTED, OTHER, TRUSTED.lower(), "0", "x"]), max_size=11),
)


@settings(max_examples=500)
@given(lines=st.lists(status_lines, min_size=2, max_size=6))
def test_only_a_good_unexpired_unrevoked_signature_by_the_trusted_key_passes(
    lines: list[str],
) -> None:
    status = "\n".join(lines)
    if signature_problem(status, TRUSTED) is not None:
        return
    words = {line.split()[1] for line in lines if line.startswith("[GNUPG:] ")}
    assert "GOODSIG" in words and "VALIDSIG" in words
    assert not words & set(REFUSING_STATUS), words
    assert any(
        line.startswith("[GNUPG:] VALIDSIG ") and TRUSTED in line.upper().split() for line in lines
    )
