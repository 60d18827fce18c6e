"""The puddle history file kept inside an appliance."""

from __future__ import annotations

import re

import pytest

from undercloud_appliance import puddle_history
from undercloud_appliance.puddle_history import (
    HistoryError,
    current_puddle,
    make_entry,
    parse_history,
)


def test_entries_round_trip_and_carry_the_documented_fields() -> None:
    first = make_entry("2026-11-20.1", None, "ok", "offline", requested="2026-11-20.1")
    second = make_entry("2026-11-21.1", "2026-11-20.1", "ok", "offline", requested="latest")
    entries = parse_history(puddle_history.dump_history([first, second]))
    assert entries == [first, second]
    assert set(second) >= {"puddle_id", "applied_at", "from", "result", "mode"}
    assert second["from"] == "2026-11-20.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", second["applied_at"])


def test_current_puddle_is_the_last_successful_one() -> None:
    entries = [
        make_entry("2026-11-20.1", None, "ok", "offline"),
        make_entry("2026-11-21.1", "2026-11-20.1", "ok", "online"),
        make_entry("2026-11-22.1", "2026-11-21.1", "failed", "online"),
    ]
    assert current_puddle(entries) == "2026-11-21.1"
    assert current_puddle([]) is None


def test_empty_file_is_no_history_and_bad_content_is_a_one_line_error() -> None:
    assert parse_history("") == []
    with pytest.raises(HistoryError, match=r"puddle-history\.json:1: not valid JSON"):
        parse_history("{oops")
    with pytest.raises(HistoryError, match="expected a JSON list of objects"):
        parse_history('{"puddle_id": "x"}')
    with pytest.raises(HistoryError, match="entry 0 has no 'puddle_id'"):
        parse_history('[{"result": "ok"}]')


def test_unknown_result_or_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="result"):
        make_entry("2026-11-20.1", None, "maybe", "offline")
    with pytest.raises(ValueError, match="mode"):
        make_entry("2026-11-20.1", None, "ok", "sideways")
