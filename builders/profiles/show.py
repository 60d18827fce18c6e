"""``profiles show``: a resolved profile as YAML with each value's origin.

A URL's password (``puddle.base_url: https://user:password@host/``) is
never shown: the output is for terminals, CI logs and bug reports.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from builders.profiles.loader import Profile
from builders.profiles.settings import join_key
from undercloud_appliance.stores.credentials import redact_urls_in

COMMENT_COLUMN_LIMIT = 64


def profile_as_json(profile: Profile) -> str:
    """``{"profile": <resolved data>, "origins": {dotted key: file:line}}``."""
    return json.dumps(
        {"profile": redact_urls_in(profile.data), "origins": profile.origins}, indent=2
    )


def profile_as_yaml(profile: Profile) -> str:
    """The resolved profile as YAML; each value ends with ``# file:line``.

    The output loads back (``yaml.safe_load``) to exactly ``profile.data``,
    but for URL passwords.
    """
    lines: list[tuple[str, str | None]] = []
    _emit_mapping(redact_urls_in(profile.data), "", "", lines, profile.origins)
    column = min(
        max((len(text) for text, origin in lines if origin), default=0) + 2,
        COMMENT_COLUMN_LIMIT,
    )
    out = []
    for text, origin in lines:
        padding = " " * max(2, column - len(text))
        out.append(f"{text}{padding}# {origin}" if origin else text)
    return "\n".join(out) + "\n"


def _emit_mapping(
    mapping: dict[str, Any],
    path: str,
    indent: str,
    lines: list[tuple[str, str | None]],
    origins: dict[str, str],
) -> None:
    for key, value in mapping.items():
        key_path = join_key(path, key)
        head = f"{indent}{scalar(key)}:"
        if isinstance(value, dict) and value:
            lines.append((head, None))
            _emit_mapping(value, key_path, indent + "  ", lines, origins)
        elif isinstance(value, list) and value:
            lines.append((head, None))
            _emit_sequence(value, key_path, indent + "  ", lines, origins)
        else:
            lines.append((f"{head} {scalar(value)}", origins.get(key_path)))


def _emit_sequence(
    items: list[Any],
    path: str,
    indent: str,
    lines: list[tuple[str, str | None]],
    origins: dict[str, str],
) -> None:
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        if isinstance(item, dict) and item:
            nested: list[tuple[str, str | None]] = []
            _emit_mapping(item, item_path, indent + "  ", nested, origins)
            first_text, first_origin = nested[0]
            nested[0] = (indent + "- " + first_text[len(indent) + 2 :], first_origin)
            lines.extend(nested)
        elif isinstance(item, list) and item:
            lines.append((f"{indent}-", origins.get(item_path)))
            _emit_sequence(item, item_path, indent + "  ", lines, origins)
        else:
            lines.append((f"{indent}- {scalar(item)}", origins.get(item_path)))


def scalar(value: Any) -> str:
    """One line of YAML for a scalar (or an empty list or mapping)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...")
    if "\n" in text:
        # A JSON string is also a YAML double-quoted scalar, and always one line.
        return json.dumps(value)
    return text
