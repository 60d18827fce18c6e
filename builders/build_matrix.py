"""The build matrix for CI systems: one row per release profile.

``COLUMNS`` is the one table of the row's fields: it makes the JSON objects
of ``profiles list --json`` and ``profiles matrix --json``, the text table
of ``profiles matrix``, the field list in their ``--help`` and the one in
``docs/ci-pipelines.rst`` (a unit test compares that with
``columns_reference()``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builders.build_host import why_not_buildable_here
from builders.profiles import Profile, list_profiles, load_profile
from undercloud_appliance.puddles import NO_PUDDLE, looks_like_label
from undercloud_appliance.stores import STORE_ENV, default_store_url
from undercloud_appliance.stores.credentials import redact_url, redact_urls_in_text

# GitHub Actions' ``strategy.matrix`` takes ``{"include": [{...}, ...]}``
# as is (through ``fromJSON``): one job per object, its fields as ``matrix.<key>``.
MATRIX_KEY = "include"


@dataclass(frozen=True)
class ProfileFacts:
    """What the columns are read from: a resolved profile and this host's verdict."""

    profile: Profile
    reason: str
    store: str


@dataclass(frozen=True)
class Column:
    key: str
    heading: str
    doc: str
    value: Callable[[ProfileFacts], str | bool]


def puddle_kind(profile: Profile) -> str:
    """``none``, ``id`` or ``label``: what the profile's ``puddle.default`` is."""
    puddle = profile.data["puddle"]
    if puddle["default"] == NO_PUDDLE:
        return "none"
    return "label" if looks_like_label(puddle, puddle["default"]) else "id"


COLUMNS: tuple[Column, ...] = (
    Column(
        "profile",
        "PROFILE",
        "release profile name: ``build PROFILE``, and ``<release>`` in the store",
        lambda facts: facts.profile.name,
    ),
    Column(
        "family",
        "FAMILY",
        "``distro.family``: ``debian``, ``centos`` or ``rhel``",
        lambda facts: facts.profile.data["distro"]["family"],
    ),
    Column(
        "openstack_release",
        "OPENSTACK",
        "``release``: the OpenStack release the appliance carries (``zed``, ``17.1``)",
        lambda facts: facts.profile.data["release"],
    ),
    Column(
        "buildable",
        "BUILDABLE",
        "true when ``build PROFILE`` would go ahead on this host (JSON boolean)",
        lambda facts: not facts.reason,
    ),
    Column(
        "puddle",
        "PUDDLE",
        "``puddle.default``: the puddle a build pins when given no ``--puddle``",
        lambda facts: facts.profile.data["puddle"]["default"],
    ),
    Column(
        "puddle_kind",
        "KIND",
        "``id``, ``label`` (resolved to an id when the build starts) or ``none`` "
        "(the distro mirror only)",
        lambda facts: puddle_kind(facts.profile),
    ),
    Column(
        "store",
        "STORE",
        f"``${STORE_ENV}``, else the built-in ``file://`` store (no password shown)",
        lambda facts: facts.store,
    ),
    Column(
        "reason",
        "REASON",
        'why ``build PROFILE`` would refuse on this host (the end of its error line); "" '
        "when buildable",
        lambda facts: facts.reason,
    ),
)


def matrix_rows(
    profiles_dir: Path | None = None, *, buildable_only: bool = False
) -> list[dict[str, Any]]:
    """One object per release profile, keys in ``COLUMNS`` order.

    A profile that does not load fails the whole matrix (``ProfileError``):
    a CI pipeline should stop on it, not skip it.  One that loads but fails
    the static checks (an element not installed here) is a row that is not
    buildable.  Profiles are checked side by side: each may wait for a
    mirror that does not answer.
    """
    profiles = [load_profile(name, profiles_dir) for name in list_profiles(profiles_dir)]
    store = redact_url(default_store_url())
    with ThreadPoolExecutor(max_workers=max(1, len(profiles))) as pool:
        reasons = list(pool.map(why_not_buildable_here, profiles))
    rows = []
    for profile, reason in zip(profiles, reasons, strict=True):
        facts = ProfileFacts(profile, redact_urls_in_text(reason), store)
        rows.append({column.key: column.value(facts) for column in COLUMNS})
    return [row for row in rows if row["buildable"]] if buildable_only else rows


def rows_as_json_list(rows: Sequence[dict[str, Any]]) -> str:
    """``profiles list --json``: ``[{...}, ...]``."""
    return json.dumps(list(rows), indent=2)


def rows_as_matrix_json(rows: Sequence[dict[str, Any]]) -> str:
    """``profiles matrix --json``: ``{"include": [{...}, ...]}`` on one line.

    One line, so a CI step can hand it on as is (``echo "matrix=$(...)" >>
    $GITHUB_OUTPUT``).
    """
    return json.dumps({MATRIX_KEY: list(rows)}, separators=(",", ":"))


def rows_as_table(rows: Sequence[dict[str, Any]]) -> str:
    """``profiles matrix``: a column per field, a line per profile."""

    def cell(value: str | bool) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        return value or "-"

    table = [[column.heading for column in COLUMNS]]
    table += [[cell(row[column.key]) for column in COLUMNS] for row in rows]
    widths = [max(len(line[index]) for line in table) for index in range(len(COLUMNS))]
    lines = []
    for line in table:
        padded = [text.ljust(width) for text, width in zip(line[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, line[-1]]))
    return "\n".join(lines) + "\n"


def columns_help() -> str:
    """The field list for ``--help`` (plain text)."""
    width = max(len(column.key) for column in COLUMNS)
    return "\n".join(
        f"  {column.key.ljust(width)}  {column.doc.replace('``', '')}" for column in COLUMNS
    )


def columns_reference() -> str:
    """The field list for ``docs/ci-pipelines.rst`` (reStructuredText)."""
    lines = []
    for column in COLUMNS:
        lines += [f"``{column.key}``", f"   {column.doc}."]
    return "\n".join(lines) + "\n"
