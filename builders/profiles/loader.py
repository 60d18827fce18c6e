"""Loading release profiles: files, ``extends`` chains, the settings table.

``load_profile`` reads a release file and the files it extends, merges
them (``layers.merge``), checks the result against ``settings.SETTINGS``
and fills in defaults.  ``validate_profile_statically`` adds the checks
that look outside the profile: elements exist, templates render.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builders.profiles.layers import Located, merge, read_layer, to_plain
from builders.profiles.settings import (
    EXTENDS_NAME,
    NAME,
    SETTINGS,
    Invalid,
    Records,
    Section,
    Setting,
    join_key,
    shown,
)
from undercloud_appliance.errors import ProfileError
from undercloud_appliance.puddles import TemplateError, render_template

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = REPO_ROOT / "release-profiles"
PROFILES_DIR_ENV = "UNDERCLOUD_APPLIANCE_PROFILES"
BASES_DIR = "bases"
SUFFIX = ".yaml"
DEFAULT_ORIGIN = "(default)"
DERIVED_ORIGIN = "(file name)"
SAMPLE_PUDDLE_ID = "0123456789abcdef0123456789abcdef"
SAMPLE_LABEL = "latest"
REPO_ELEMENTS_DIR = REPO_ROOT / "elements"


@dataclass
class Profile:
    """A resolved release profile."""

    name: str
    file: Path
    data: dict[str, Any]
    origins: dict[str, str]
    # The files merged into it, base first, as messages name them.
    sources: list[str] = field(default_factory=list)

    def get(self, dotted: str, default: Any = None) -> Any:
        """The value at ``dotted`` (``puddle.labels.url``, ``puddle.repos[0].url``)."""
        value: Any = self.data
        for part in _path_parts(dotted):
            if isinstance(part, int):
                if not isinstance(value, list) or not -len(value) <= part < len(value):
                    return default
            elif not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        return value

    def origin(self, dotted: str) -> str:
        """Where the value at ``dotted`` (or its closest parent) came from."""
        return _origin_of(dotted, self.origins, str(self.file))


def _path_parts(dotted: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in dotted.split("."):
        match = re.fullmatch(r"([^\[]*)((?:\[-?\d+\])*)", piece)
        if not match:
            parts.append(piece)
            continue
        if match.group(1):
            parts.append(match.group(1))
        parts.extend(int(index) for index in re.findall(r"\[(-?\d+)\]", match.group(2)))
    return parts


def _parent_path(path: str) -> str:
    match = re.fullmatch(r"(.*?)(\[\d+\]|\.[^.\[]*)", path)
    return match.group(1) if match else ""


def _origin_of(
    path: str, origins: Mapping[str, str], fallback: str, *, file_only: bool = False
) -> str:
    """The origin of ``path`` or of its closest parent that has one.

    ``file_only`` skips ``(default)`` and ``(file name)``: an error must
    point at a file.
    """
    while path:
        origin = origins.get(path)
        if origin and not (file_only and origin.startswith("(")):
            return origin
        path = _parent_path(path)
    return fallback


def _error(invalid: Invalid, origins: Mapping[str, str], fallback: str) -> ProfileError:
    location = _origin_of(invalid.path, origins, fallback, file_only=True)
    return ProfileError(f"{location}: {invalid.path}: {invalid.message}")


def profiles_dir_default() -> Path:
    """``$UNDERCLOUD_APPLIANCE_PROFILES``, else the repository's release-profiles/."""
    configured = os.environ.get(PROFILES_DIR_ENV)
    return Path(configured) if configured else PROFILES_DIR


def display_path(path: Path, profiles_dir: Path) -> str:
    """How messages name a file: relative to the profiles dir's parent or cwd."""
    resolved = path.resolve()
    for root in (profiles_dir.resolve().parent, Path.cwd()):
        try:
            return str(resolved.relative_to(root))
        except ValueError:
            continue
    return str(resolved)


def list_profiles(profiles_dir: Path | None = None) -> list[str]:
    """Names of the buildable release profiles (bases are not releases)."""
    directory = Path(profiles_dir) if profiles_dir is not None else profiles_dir_default()
    if not directory.is_dir():
        raise ProfileError(f"{directory}: release profiles directory does not exist")
    return sorted(path.stem for path in directory.glob(f"*{SUFFIX}") if path.is_file())


def load_profile(name_or_path: str, profiles_dir: Path | None = None) -> Profile:
    """Load, merge, check and complete the release profile ``name_or_path``.

    A name is looked up as ``<profiles_dir>/<name>.yaml``; anything ending in
    ``.yaml``/``.yml`` is a path.  ``extends`` always resolves relative to the
    profiles directory.  Raises ``ProfileError`` (one line) on any problem.
    """
    directory = Path(profiles_dir) if profiles_dir is not None else profiles_dir_default()
    path = _locate(str(name_or_path), directory)
    chain = _read_chain(path, directory)
    resolved = chain[0][1]
    for _, layer in chain[1:]:
        resolved = merge(resolved, layer)
    origins: dict[str, str] = {}
    data = to_plain(resolved, "", origins)
    top = resolved.origin
    check_profile_data(data, origins, top)
    data["name"] = path.stem
    origins["name"] = DERIVED_ORIGIN
    return Profile(
        name=path.stem,
        file=path,
        data=_ordered(data, SCHEMA),
        origins=origins,
        sources=[display for display, _ in chain],
    )


def _locate(name_or_path: str, directory: Path) -> Path:
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"{name_or_path}: no such release profile file")
        bases = (directory / BASES_DIR).resolve()
        if path.resolve().parent == bases:
            raise ProfileError(
                f"{display_path(path, directory)}: is a base, not a buildable release; "
                "it is checked through the profiles that extend it"
            )
        return path
    if name_or_path.startswith(BASES_DIR + "/"):
        raise ProfileError(
            f"{name_or_path!r} is a base, not a buildable release; "
            "it is checked through the profiles that extend it"
        )
    if not re.fullmatch(NAME, name_or_path):
        raise ProfileError(f"{name_or_path!r} is not a release profile name")
    path = directory / f"{name_or_path}{SUFFIX}"
    if not path.is_file():
        known = ", ".join(list_profiles(directory)) if directory.is_dir() else "none"
        raise ProfileError(
            f"no release profile {name_or_path!r} in {directory} (known: {known or 'none'})"
        )
    return path


def _read_file(path: Path, display: str) -> Located:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ProfileError(f"{display}: cannot read: {reason}") from None
    layer = read_layer(text, display)
    if not isinstance(layer.value, dict):
        raise ProfileError(
            f"{layer.origin}: a profile must be a mapping of settings, "
            f"not {type(layer.value).__name__}"
        )
    return layer


def _read_chain(path: Path, directory: Path) -> list[tuple[str, Located]]:
    """The files of an ``extends`` chain, base first."""
    chain: list[tuple[str, Located]] = []
    seen: list[Path] = []
    current = path
    while True:
        display = display_path(current, directory)
        layer = _read_file(current, display)
        seen.append(current.resolve())
        chain.append((display, layer))
        extends = layer.value.get("extends")
        if extends is None or extends.value == "":
            break
        if not isinstance(extends.value, str) or not re.fullmatch(EXTENDS_NAME, extends.value):
            raise ProfileError(
                f"{extends.origin}: extends: {shown(extends.value)} is not a profile name "
                "(a path relative to release-profiles/ without .yaml, e.g. bases/debian)"
            )
        target = directory / f"{extends.value}{SUFFIX}"
        if target.resolve() in seen:
            loop = [name for name, _ in chain] + [display_path(target, directory)]
            raise ProfileError(f"{extends.origin}: extends: loop: {' -> '.join(loop)}")
        if not target.is_file():
            raise ProfileError(
                f"{extends.origin}: extends: {extends.value!r} does not exist "
                f"({display_path(target, directory)})"
            )
        current = target
    chain.reverse()
    return chain


def _ordered(data: dict[str, Any], schema: _Schema) -> dict[str, Any]:
    """Keys in table order, so ``profiles show`` reads like the docs."""
    order = list(schema.children)
    ordered: dict[str, Any] = {}
    for key in sorted(data, key=order.index):
        known = schema.children[key]
        value = data[key]
        if isinstance(known, _Schema):
            value = _ordered(value, known)
        elif isinstance(known.kind, Records):
            fields = _Schema(children=dict(SCHEMA.fields[known.key]))
            value = [_ordered(record, fields) for record in value]
        ordered[key] = value
    return ordered


# -- the settings table applied to a merged profile --------------------------


@dataclass
class _Schema:
    """``SETTINGS`` as a tree: mapping key -> _Schema (a section) or Setting."""

    children: dict[str, _Schema | Setting] = field(default_factory=dict)
    # Record fields of a Records setting, by its dotted key.
    fields: dict[str, dict[str, Setting]] = field(default_factory=dict)


def _build_schema() -> _Schema:
    root = _Schema()
    for entry in SETTINGS:
        if "[]." in entry.key:
            owner, name = entry.key.split("[].", 1)
            root.fields.setdefault(owner, {})[name] = entry
            continue
        node = root
        *parents, leaf = entry.key.split(".")
        for part in parents:
            child = node.children[part]
            assert isinstance(child, _Schema), entry.key
            node = child
        node.children[leaf] = _Schema() if isinstance(entry, Section) else entry
    return root


SCHEMA = _build_schema()


def check_profile_data(data: dict[str, Any], origins: dict[str, str], top: str) -> None:
    """Check merged ``data`` against the settings table; fill in defaults.

    ``origins`` (dotted key -> file:line) gains an entry for each default;
    ``top`` is the location named when nothing closer is known.
    """
    try:
        _check_known(data, SCHEMA, "")
        for entry in SETTINGS:
            if "[]." in entry.key:
                continue
            *parents, leaf = entry.key.split(".")
            container = _container(data, parents)
            if isinstance(entry, Section):
                if leaf not in container:
                    container[leaf] = {}
                    origins[entry.key] = DEFAULT_ORIGIN
                continue
            _apply(entry, container, leaf, entry.key, data, origins)
    except Invalid as invalid:
        raise _error(invalid, origins, top) from None


def _container(data: dict[str, Any], parents: list[str]) -> dict[str, Any]:
    container = data
    for part in parents:
        container = container[part]
    return container


def _value_at(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _check_known(value: Any, schema: _Schema, path: str) -> None:
    if not isinstance(value, dict):
        raise Invalid(path, f"expected a mapping of settings, got {shown(value)}")
    for key, item in value.items():
        key_path = join_key(path, key)
        known = schema.children.get(key)
        if known is None:
            raise Invalid(key_path, f"unknown setting{_suggestion(key, schema.children)}")
        if isinstance(known, _Schema):
            _check_known(item, known, key_path)
        elif isinstance(known.kind, Records):
            known.kind.check(item, key_path)
            fields = SCHEMA.fields[known.key]
            for index, record in enumerate(item):
                _check_known(record, _Schema(children=dict(fields)), f"{key_path}[{index}]")


def _suggestion(key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known here: {', '.join(sorted(known))})"


def _apply(
    setting: Setting,
    container: dict[str, Any],
    key: str,
    path: str,
    data: dict[str, Any],
    origins: dict[str, str],
) -> None:
    present = key in container
    if setting.derived:
        if present:
            raise Invalid(path, "is derived from the file name and cannot be set")
        return
    if setting.only_if is not None:
        condition_key, condition_value = setting.only_if
        if _value_at(data, condition_key) != condition_value:
            if present:
                raise Invalid(path, f"only applies when {condition_key} is {condition_value!r}")
            return
    if not present:
        if setting.required:
            raise Invalid(path, "missing required setting")
        container[key] = copy.deepcopy(setting.default)
        origins[path] = DEFAULT_ORIGIN
    else:
        setting.kind.check(container[key], path)
        if setting.constraint is not None:
            problem = setting.constraint(container[key], data)
            if problem:
                raise Invalid(path, problem)
    if isinstance(setting.kind, Records):
        for index, record in enumerate(container[key]):
            for name, record_field in SCHEMA.fields[setting.key].items():
                _apply(record_field, record, name, f"{path}[{index}].{name}", data, origins)


# -- checks that look outside the profile -------------------------------------


def element_dirs() -> list[Path]:
    """Where diskimage-builder finds elements: its own, ours, $ELEMENTS_PATH."""
    dirs = [REPO_ELEMENTS_DIR]
    try:
        import diskimage_builder
    except ImportError:
        pass
    else:
        dirs.insert(0, Path(diskimage_builder.__file__).parent / "elements")
    dirs.extend(Path(entry) for entry in os.environ.get("ELEMENTS_PATH", "").split(":") if entry)
    return dirs


def validate_profile_statically(profile: Profile) -> None:
    """Everything checkable without building: schema, elements, templates, labels.

    Raises ``ProfileError`` naming the file:line and setting at fault.
    """
    data = copy.deepcopy(profile.data)
    data.pop("name", None)
    origins = dict(profile.origins)
    top = profile.origins.get("release", str(profile.file))
    check_profile_data(data, origins, top)
    try:
        _check_elements(data)
        _check_templates(data)
    except Invalid as invalid:
        raise _error(invalid, origins, top) from None


def _check_elements(data: Mapping[str, Any]) -> None:
    dirs = element_dirs()
    wanted = [("distro.base_element", data["distro"]["base_element"])]
    wanted += [(f"elements[{index}]", name) for index, name in enumerate(data["elements"])]
    for path, name in wanted:
        if not any((directory / name).is_dir() for directory in dirs):
            searched = ", ".join(str(directory) for directory in dirs)
            raise Invalid(
                path, f"{name!r} is not a diskimage-builder element (searched {searched})"
            )


def _check_templates(data: Mapping[str, Any]) -> None:
    puddle = data["puddle"]
    default = puddle["default"]
    is_id = bool(re.fullmatch(puddle["id_pattern"], default))
    if default != "none" and not is_id and not puddle["labels"]["url"]:
        raise Invalid(
            "puddle.default",
            f"{default!r} is a label (it does not match puddle.id_pattern) but "
            "puddle.labels.url is empty",
        )
    sample_id = default if is_id else SAMPLE_PUDDLE_ID
    variables = {
        "base_url": puddle["base_url"],
        "puddle_id": sample_id,
        "label": SAMPLE_LABEL,
        "release": data["release"],
    }
    templates = [(f"puddle.repos[{i}].url", repo["url"]) for i, repo in enumerate(puddle["repos"])]
    if puddle["labels"]["url"]:
        templates.append(("puddle.labels.url", puddle["labels"]["url"]))
    for path, template in templates:
        try:
            rendered = render_template(template, variables)
        except TemplateError as error:
            raise Invalid(path, str(error)) from None
        if puddle["base_url"] and not re.match(r"(https?|ftp|file)://\S+\Z", rendered):
            raise Invalid(path, f"renders to {rendered!r}, which is not a URL")
