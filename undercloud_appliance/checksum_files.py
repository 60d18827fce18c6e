"""The checksum files of a published build, in the formats coreutils reads.

Every line is ``<hex>  <name>`` with a bare file name, never a path, so
``sha256sum -c SHA256SUMS`` and ``md5sum -c undercloud.qcow2.md5`` work
in the build directory, in a label directory and after a download.
"""

from __future__ import annotations

import hashlib
import re

from undercloud_appliance.errors import ChecksumError

_LINE = re.compile(r"^(?P<hex>[0-9a-f]+) [ *](?P<name>[^/\s][^/]*)$")
HEX_LENGTH = {"sha256": 64, "md5": 32}


def checksum_line(hex_digest: str, name: str) -> str:
    if "/" in name or not name:
        raise ValueError(f"checksum files hold bare file names, not {name!r}")
    return f"{hex_digest}  {name}\n"


def render_sums(digests: dict[str, str]) -> str:
    """A SHA256SUMS-style file for ``{name: hex}``, sorted by name."""
    return "".join(checksum_line(digests[name], name) for name in sorted(digests))


def parse_sums(text: str, source: str, algorithm: str = "sha256") -> dict[str, str]:
    """``{name: hex}`` from a checksum file; ChecksumError naming ``source`` if malformed."""
    result: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        if not match or len(match["hex"]) != HEX_LENGTH[algorithm]:
            raise ChecksumError(f"{source}:{number}: not a '<{algorithm}>  <name>' line")
        result[match["name"]] = match["hex"]
    if not result:
        raise ChecksumError(f"{source}: holds no checksums")
    return result


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
