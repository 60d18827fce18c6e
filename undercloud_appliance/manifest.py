"""The build manifest: what builders write and publish/importer read.

The format is documented in ``docs/manifest-format.rst``; this module is
its only reader and writer.  A manifest is plain JSON so that shell tools
(``jq``) and other languages can read it too.

In code a manifest is a ``Manifest`` (with a ``ManifestImage``): every new
manifest is made by the ``Manifest`` constructor (``Manifest.successor``
for a build made from another build), every manifest read or written
passes the one validator, ``Manifest.from_dict``.  The dict functions
(``parse_manifest``, ``read_manifest``, ``validate_manifest``,
``write_manifest``) are the same validator for readers that work on the
JSON object itself.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.qcow2 import virtual_size
from undercloud_appliance.store_layout import IMAGE_NAME
from undercloud_appliance.stores.credentials import redact_urls_in

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
# Optional fields the importer reads (path from the top): when present, of
# this type, so a manifest a store serves cannot make it fail half-way.
OPTIONAL_FIELDS: dict[tuple[str, ...], type | tuple[type, ...]] = {
    ("profile", "resolved"): dict,
    ("profile", "resolved", "undercloud"): dict,
    ("profile", "resolved", "undercloud", "smoke_commands"): list,
    ("profile", "resolved", "undercloud", "update_commands"): list,
    ("profile", "resolved", "undercloud", "upgrade_commands"): list,
    ("profile", "resolved", "provisioning"): dict,
    ("smoke",): (dict, type(None)),
    ("ironic_images",): (dict, type(None)),
    # The build cache's key (builders/input_digest.py): "sha256:<hex>".
    ("input_digest",): (str, type(None)),
    # The same without the puddle (what nightly derives from): "sha256:<hex>".
    ("recipe_digest",): (str, type(None)),
}
# Lists of commands the importer runs in the guest: strings only.
COMMAND_LISTS = [
    path for path, expected in OPTIONAL_FIELDS.items() if path[-1].endswith("_commands")
]


def new_build_id(now: datetime.datetime | None = None) -> str:
    """A fresh ``YYYYMMDDTHHMMSSZ-xxxxxx`` build id (docs/manifest-format.rst)."""
    now = now or datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utc_timestamp(now: datetime.datetime | None = None) -> str:
    """The manifest's time format: ISO 8601 UTC to the second (``...T04:18:00Z``)."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(4 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


class ManifestError(ApplianceError):
    """A manifest is missing, unreadable or does not follow the format."""

    exit_code = 2


@dataclass(kw_only=True)
class ManifestImage:
    """The manifest's ``image`` object: the build's qcow2."""

    filename: str = IMAGE_NAME
    format: str = "qcow2"
    virtual_size: int
    file_size: int
    sha256: str
    compression: str | None = None
    # Fields this version does not model, kept as they were read.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_file(
        cls,
        image: Path,
        *,
        compression: str | None,
        sha256: str | None = None,
        extra: Mapping[str, Any] | None = None,
        error_type: type[ApplianceError] = ManifestError,
    ) -> ManifestImage:
        """Describe the qcow2 at ``image`` truthfully (sizes and, unless given, sha256)."""
        return cls(
            virtual_size=virtual_size(image, error_type=error_type),
            file_size=Path(image).stat().st_size,
            sha256=sha256 or file_sha256(image),
            compression=compression,
            extra=dict(extra or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "filename": self.filename,
            "format": self.format,
            "virtual_size": self.virtual_size,
            "file_size": self.file_size,
            "sha256": self.sha256,
            "compression": self.compression,
        }


def puddle_section(
    *,
    puddle_id: str | None,
    requested: str | None,
    package_manager: str,
    base_url: str | None,
    repos: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The manifest's ``puddle`` object: the pinned id and the repos rendered for it."""
    return {
        "id": puddle_id,
        "requested": requested,
        "package_manager": package_manager,
        "base_url": base_url,
        "repos": [dict(repo) for repo in repos],
    }


@dataclass(kw_only=True)
class Manifest:
    """One build's manifest (docs/manifest-format.rst).

    ``profile``, ``distro``, ``puddle`` and ``dib`` are the JSON objects the
    format describes (``puddle_section`` makes the ``puddle`` one); fields
    the format does not name (a derived build's ``updated_from`` and
    ``update``) are kept in ``extra``.
    """

    build_id: str
    release: str
    profile: dict[str, Any]
    distro: dict[str, Any]
    puddle: dict[str, Any]
    dib: dict[str, Any]
    image: ManifestImage
    packages: dict[str, str]
    timings: dict[str, float]
    undercloud_packages: list[str] = field(default_factory=list)
    smoke: dict[str, Any] | None = None
    # The deploy ramdisk and deploy image baked in (builders/ironic_images.py), or None.
    ironic_images: dict[str, Any] | None = None
    # A digest of what the build was made from (builders/input_digest.py), or None.
    input_digest: str | None = None
    # The same without the puddle (``ApplianceInputs.recipe_digest``): a
    # derived build keeps its parent's, since only the puddle moved.
    recipe_digest: str | None = None
    promotions: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=utc_timestamp)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Sorted so that the JSON and any listing of it read the same.
        self.packages = dict(sorted(self.packages.items()))

    def successor(
        self,
        *,
        build_id: str,
        puddle: dict[str, Any],
        image: ManifestImage,
        packages: Mapping[str, str],
        timings: Mapping[str, float] | None = None,
        smoke: dict[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """A new build made from this one (a derived build), created now.

        Profile, distro, dib, undercloud packages and promotions are this
        build's; ``extra`` adds to (and overrides) this build's extra fields.
        It has no ``input_digest``: it is not made from this build's inputs
        alone, so no build cache may take it for a build of them.  It keeps
        the ``recipe_digest``: the same recipe on another puddle.
        """
        return dataclasses.replace(
            self,
            build_id=build_id,
            created=utc_timestamp(),
            puddle=puddle,
            image=image,
            packages=dict(packages),
            timings=dict(timings if timings is not None else self.timings),
            smoke=smoke,
            input_digest=None,
            extra={**self.extra, **(extra or {})},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json``."""
        return json.loads(
            json.dumps(
                {
                    **self.extra,
                    "format": self.format,
                    "format_version": self.format_version,
                    "build_id": self.build_id,
                    "release": self.release,
                    "created": self.created,
                    "profile": self.profile,
                    "distro": self.distro,
                    "puddle": self.puddle,
                    "dib": self.dib,
                    "image": self.image.to_dict(),
                    "packages": self.packages,
                    "undercloud_packages": self.undercloud_packages,
                    "timings": self.timings,
                    "smoke": self.smoke,
                    "ironic_images": self.ironic_images,
                    "input_digest": self.input_digest,
                    "recipe_digest": self.recipe_digest,
                    "promotions": self.promotions,
                }
            )
        )  # through JSON: a deep copy, and a value JSON cannot hold fails here

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        """The typed manifest of ``data``; ManifestError names what does not follow the format."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: top level must be a JSON object")
        for name, expected in REQUIRED_FIELDS.items():
            if name not in data:
                raise ManifestError(f"{source}: missing field '{name}'")
            if not isinstance(data[name], expected):
                raise ManifestError(f"{source}: field '{name}' has the wrong type")
        if data["format"] != FORMAT_NAME:
            raise ManifestError(
                f"{source}: field 'format' is {data['format']!r}, not {FORMAT_NAME!r}"
            )
        if data["format_version"] > FORMAT_VERSION:
            raise ManifestError(
                f"{source}: format_version {data['format_version']} is newer than this "
                f"tool understands ({FORMAT_VERSION})"
            )
        for name, expected in REQUIRED_IMAGE_FIELDS.items():
            if not isinstance(data["image"].get(name), expected):
                raise ManifestError(
                    f"{source}: field 'image.{name}' is missing or has the wrong type"
                )
        for path, expected in OPTIONAL_FIELDS.items():
            value = _optional_field(data, path)
            if value is not _ABSENT and not isinstance(value, expected):
                raise ManifestError(f"{source}: field '{'.'.join(path)}' has the wrong type")
        for path in COMMAND_LISTS:
            commands = _optional_field(data, path)
            if commands is not _ABSENT and not all(isinstance(c, str) for c in commands):
                raise ManifestError(f"{source}: field '{'.'.join(path)}' must list strings")
        data = json.loads(json.dumps(data))  # a deep copy: the Manifest owns its values
        image = data["image"]
        image_fields = {name: image.pop(name) for name in REQUIRED_IMAGE_FIELDS}
        modelled = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(
            image=ManifestImage(
                **image_fields, compression=image.pop("compression", None), extra=image
            ),
            **{name: value for name, value in data.items() if name in modelled - {"image"}},
            extra={name: value for name, value in data.items() if name not in modelled},
        )

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read and validate a manifest file (or the manifest in a directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        return cls.from_dict(read_manifest(path), str(path))

    def write(self, path: Path) -> None:
        """Validate and write atomically (temp name, fsync, rename)."""
        write_manifest(path, self.to_dict())


_ABSENT = object()


def _optional_field(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path``, or _ABSENT when a step is missing (or not an object)."""
    value: Any = data
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return _ABSENT
        value = value[name]
    return value


def validate_manifest(data: Any, source: str = MANIFEST_NAME) -> dict[str, Any]:
    """Check ``data`` follows the manifest format; return it unchanged."""
    Manifest.from_dict(data, source)
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
    except RecursionError:  # a store can serve "[[[[..." as deep as it likes
        raise ManifestError(f"{source}: JSON nested too deeply") from None
    return validate_manifest(data, source)


def dump_manifest(data: dict[str, Any] | Manifest) -> str:
    """The manifest's JSON text, URL passwords removed: it is published for anyone to read.

    A puddle base URL given as ``https://user:password@host/`` is recorded as
    ``https://user@host/``: an update of such a build gives the password
    again with ``--puddle-base``; it never comes from the manifest.
    """
    if isinstance(data, Manifest):
        data = data.to_dict()
    return json.dumps(redact_urls_in(data), indent=2, sort_keys=True) + "\n"


def write_manifest(path: Path, data: dict[str, Any] | Manifest) -> None:
    """Validate and write ``data`` atomically (temp name, fsync, rename)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if isinstance(data, Manifest):
        data = data.to_dict()
    validate_manifest(data, str(path))
    write_file_atomically(path, dump_manifest(data).encode())


def write_file_atomically(path: Path, content: bytes, mode: int = 0o644) -> None:
    """Never leave a half-written file under ``path``'s name (``mode`` from the start)."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
