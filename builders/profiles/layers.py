"""Profile files as trees of located values, and the merge rule.

A file is read with yaml's compose API so every node keeps the line it
starts on.  Each value becomes a ``Located``: the value (a dict of
``Located``, a list of ``Located``, or a plain scalar), the ``file:line``
it came from, and whether it was tagged ``!replace``.

Merge rule (a child file over its base): mappings merge key by key,
recursively; lists append (base items first, then the child's); anything
else is replaced by the child's value.  A value tagged ``!replace``
replaces the base value instead of merging or appending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from builders.profiles.settings import join_key
from undercloud_appliance.errors import ProfileError

REPLACE_TAG = "!replace"
YAML_TAG_PREFIX = "tag:yaml.org,2002:"
MAP_TAG = YAML_TAG_PREFIX + "map"
SEQ_TAG = YAML_TAG_PREFIX + "seq"
MERGE_TAG = YAML_TAG_PREFIX + "merge"
# Profiles are small; these bound what a hostile or broken file can cost
# (alias bombs, runaway nesting) and keep every later recursion shallow.
MAX_DEPTH = 32
MAX_NODES = 20_000


@dataclass
class Located:
    """A profile value with the ``file:line`` it came from."""

    value: Any
    origin: str
    replace: bool = False


def read_layer(text: str, display: str) -> Located:
    """Parse one profile file's text; ``display`` is its name in messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = error.problem or error.context or "invalid YAML"
        raise ProfileError(f"{display}:{line}: YAML syntax error: {one_line(problem)}") from None
    except yaml.YAMLError as error:
        raise ProfileError(f"{display}: YAML error: {one_line(str(error))}") from None
    except RecursionError:
        raise ProfileError(f"{display}: YAML nested too deeply") from None
    if node is None:
        return Located({}, f"{display}:1")
    return _Converter(display).convert(node, depth=0)


def one_line(text: str) -> str:
    return " ".join(text.split())


class _Converter:
    def __init__(self, display: str) -> None:
        self.display = display
        self.nodes = 0
        self.active: set[int] = set()
        self.loader = yaml.SafeLoader("")

    def error(self, node: yaml.Node, message: str) -> ProfileError:
        return ProfileError(f"{self.origin(node)}: {message}")

    def origin(self, node: yaml.Node) -> str:
        return f"{self.display}:{node.start_mark.line + 1}"

    def convert(self, node: yaml.Node, depth: int, origin: str | None = None) -> Located:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(node, f"more than {MAX_NODES} values (alias expansion?)")
        if depth > MAX_DEPTH:
            raise self.error(node, f"values nested more than {MAX_DEPTH} levels deep")
        if id(node) in self.active:
            raise self.error(node, "an alias refers to a value that contains it")
        replace = node.tag == REPLACE_TAG
        origin = origin or self.origin(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self.check_tag(node, MAP_TAG)
                return Located(self.convert_mapping(node, depth), origin, replace)
            if isinstance(node, yaml.SequenceNode):
                self.check_tag(node, SEQ_TAG)
                items = [self.convert(item, depth + 1) for item in node.value]
                return Located(items, origin, replace)
            return Located(self.scalar(node), origin, replace)
        finally:
            self.active.discard(id(node))

    def check_tag(self, node: yaml.Node, plain_tag: str) -> None:
        if node.tag not in (plain_tag, REPLACE_TAG):
            raise self.error(node, f"unsupported YAML tag {node.tag!r} (only !replace is)")

    def convert_mapping(self, node: yaml.MappingNode, depth: int) -> dict[str, Located]:
        mapping: dict[str, Located] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                raise self.error(key_node, "YAML merge keys (<<) are not supported; use extends")
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == REPLACE_TAG:
                raise self.error(key_node, "setting names must be plain strings")
            key = self.scalar(key_node)
            if not isinstance(key, str):
                raise self.error(key_node, f"setting name {key!r} is not a string")
            if key in mapping:
                raise self.error(key_node, f"{key}: set twice in the same mapping")
            # A setting's origin is the line of its key: for a block value
            # that is where the reader sees the setting.
            mapping[key] = self.convert(value_node, depth + 1, self.origin(key_node))
        return mapping

    def scalar(self, node: yaml.Node) -> Any:
        tag = node.tag
        if tag == REPLACE_TAG:
            # Resolve as if untagged: `!replace 3` is an int, `!replace "3"` a string.
            plain = node.style is None
            tag = self.loader.resolve(yaml.ScalarNode, node.value, (plain, not plain))
        elif not tag.startswith(YAML_TAG_PREFIX):
            raise self.error(node, f"unsupported YAML tag {tag!r} (only !replace is)")
        resolved = yaml.ScalarNode(tag, node.value, node.start_mark, node.end_mark, node.style)
        try:
            return self.loader.construct_object(resolved, deep=True)
        # yaml's constructors raise anything (ValueError, AttributeError...)
        # on a bad explicit tag such as `!!int abc` or `!!timestamp 2024-13`.
        except Exception as error:
            raise self.error(node, f"cannot read value: {one_line(str(error))}") from None


def merge(base: Located, child: Located) -> Located:
    """``child`` layered over ``base`` (see the module docstring)."""
    if child.replace:
        return child
    if isinstance(base.value, dict) and isinstance(child.value, dict):
        merged = dict(base.value)
        for key, value in child.value.items():
            merged[key] = merge(merged[key], value) if key in merged else value
        return Located(merged, child.origin)
    if isinstance(base.value, list) and isinstance(child.value, list):
        return Located(base.value + child.value, child.origin)
    return child


def to_plain(located: Located, path: str, origins: dict[str, str]) -> Any:
    """The plain value of a tree; records every path's origin in ``origins``."""
    if path:
        origins[path] = located.origin
    if isinstance(located.value, dict):
        return {
            key: to_plain(value, join_key(path, key), origins)
            for key, value in located.value.items()
        }
    if isinstance(located.value, list):
        return [
            to_plain(item, f"{path}[{index}]", origins) for index, item in enumerate(located.value)
        ]
    return located.value
