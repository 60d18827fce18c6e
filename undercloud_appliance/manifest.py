"""The build manifest: what builders write and publish/importer read.

The format is documented in ``docs/manifest-format.rst``; this module is
its only reader and writer.  A manifest is plain JSON so that shell tools
(``jq``) and other languages can read it too.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from undercloud_appliance.errors import ApplianceError

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "undercloud-appliance-manifest"
FORMAT_VERSION = 1

# field -> expected JSON type(s); nested requirements are checked below.
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "build_id": str,
    "release": str,
    "created": str,
    "profile": dict,
    "distro": dict,
    "puddle": dict,
    "dib": dict,
    "image": dict,
    "packages": dict,
    "timings": dict,
}
REQUIRED_IMAGE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "filename": str,
    "format": str,
    "virtual_size": int,
    "file_size": int,
    "sha256": str,
}


def new_build_id(now: datetime.datetime | None = None) -> str:
    """A fresh ``YYYYMMDDTHHMMSSZ-xxxxxx`` build id (docs/manifest-format.rst)."""
    now = now or datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class ManifestError(ApplianceError):
    """A manifest is missing, unreadable or does not follow the format."""

    exit_code = 2


def validate_manifest(data: Any, source: str = MANIFEST_NAME) -> dict[str, Any]:
    """Check ``data`` follows the manifest format; return it unchanged."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: top level must be a JSON object")
    for name, expected in REQUIRED_FIELDS.items():
        if name not in data:
            raise ManifestError(f"{source}: missing field '{name}'")
        if not isinstance(data[name], expected):
            raise ManifestError(f"{source}: field '{name}' has the wrong type")
    if data["format"] != FORMAT_NAME:
        raise ManifestError(f"{source}: field 'format' is {data['format']!r}, not {FORMAT_NAME!r}")
    if data["format_version"] > FORMAT_VERSION:
        raise ManifestError(
            f"{source}: format_version {data['format_version']} is newer than this "
            f"tool understands ({FORMAT_VERSION})"
        )
    for name, expected in REQUIRED_IMAGE_FIELDS.items():
        if not isinstance(data["image"].get(name), expected):
            raise ManifestError(f"{source}: field 'image.{name}' is missing or has the wrong type")
    return data


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and validate a manifest file (or the manifest in a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest") from None
    except OSError as error:
        raise ManifestError(f"{path}: cannot read manifest: {error.strerror}") from None
    return parse_manifest(text, str(path))


def parse_manifest(text: str, source: str = MANIFEST_NAME) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{source}:{error.lineno}: not valid JSON: {error.msg}") from None
    return validate_manifest(data, source)


def dump_manifest(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    """Validate and write ``data`` atomically (temp name, fsync, rename)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    validate_manifest(data, str(path))
    write_file_atomically(path, dump_manifest(data).encode())


def write_file_atomically(path: Path, content: bytes) -> None:
    """Never leave a half-written file under ``path``'s name."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
