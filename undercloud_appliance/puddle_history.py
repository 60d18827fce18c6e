"""Which puddles an appliance was updated to: a JSON file inside the appliance.

``/etc/undercloud-appliance/puddle-history.json`` holds a list, oldest
first, of entries::

    {"puddle_id": "2026-11-21.1", "applied_at": "2026-11-22T05:01:02Z",
     "from": "2026-11-20.1", "result": "ok", "mode": "offline",
     "requested": "latest", "build_id": "...", "repo_files": [...]}

``from`` is the puddle the appliance had before (null for one built
without a puddle).  ``result`` is ``ok`` or ``failed`` (online updates
record failures; offline updates write nothing when they fail).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

from undercloud_appliance.errors import ApplianceError

HISTORY_PATH = "/etc/undercloud-appliance/puddle-history.json"
RESULTS = frozenset({"ok", "failed"})
MODES = frozenset({"offline", "online"})


class HistoryError(ApplianceError):
    """The puddle history file in an appliance is unreadable."""

    exit_code = 2


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_history(text: str, source: str = HISTORY_PATH) -> list[dict[str, Any]]:
    """The entries of a history file; an empty or missing file is no history."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise HistoryError(f"{source}:{error.lineno}: not valid JSON: {error.msg}") from None
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise HistoryError(f"{source}: expected a JSON list of objects")
    for index, entry in enumerate(data):
        if not isinstance(entry.get("puddle_id"), str):
            raise HistoryError(f"{source}: entry {index} has no 'puddle_id'")
    return data


def dump_history(entries: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(entries), indent=2, sort_keys=True) + "\n"


def make_entry(
    puddle_id: str,
    previous_puddle_id: str | None,
    result: str,
    mode: str,
    **details: Any,
) -> dict[str, Any]:
    if result not in RESULTS:
        raise ValueError(f"history result {result!r} not in {sorted(RESULTS)}")
    if mode not in MODES:
        raise ValueError(f"history mode {mode!r} not in {sorted(MODES)}")
    entry = {
        "puddle_id": puddle_id,
        "applied_at": utc_now(),
        "from": previous_puddle_id,
        "result": result,
        "mode": mode,
    }
    entry.update(details)
    return entry


def current_puddle(entries: Sequence[dict[str, Any]]) -> str | None:
    """The puddle the last successful update applied, if any."""
    for entry in reversed(entries):
        if entry.get("result") == "ok":
            return str(entry["puddle_id"])
    return None


def read_guest_history(guest: Any) -> list[dict[str, Any]]:
    """History from a launched, mounted libguestfs handle."""
    if not guest.is_file(HISTORY_PATH):
        return []
    return parse_history(guest.read_file(HISTORY_PATH).decode("utf-8", "replace"))


def write_guest_history(guest: Any, entries: Sequence[dict[str, Any]]) -> None:
    guest.mkdir_p(HISTORY_PATH.rsplit("/", 1)[0])
    guest.write(HISTORY_PATH, dump_history(entries).encode())
    guest.chmod(0o644, HISTORY_PATH)
