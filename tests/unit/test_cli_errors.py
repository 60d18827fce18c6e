"""The CLI turns every failure into one line and an exit code."""

from __future__ import annotations

import argparse

import pytest

import undercloud_appliance_cli as cli
from undercloud_appliance.errors import ChecksumError


def run_with(monkeypatch: pytest.MonkeyPatch, func, *extra: str) -> int:
    original = cli.build_parser

    def parser_with_test_command() -> argparse.ArgumentParser:
        parser = original()
        subparsers = next(
            action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        )
        subparsers.add_parser("explode").set_defaults(func=func)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_with_test_command)
    return cli.main([*extra, "explode"])


def test_project_error_is_one_line_with_its_exit_code(monkeypatch, capsys) -> None:
    def fail(args):
        raise ChecksumError("undercloud.qcow2: sha256 mismatch")

    assert run_with(monkeypatch, fail) == 6
    err = capsys.readouterr().err
    assert err == "undercloud-appliance: error: undercloud.qcow2: sha256 mismatch\n"


def test_unexpected_error_is_one_line_without_traceback(monkeypatch, capsys) -> None:
    def crash(args):
        raise KeyError("boom")

    assert run_with(monkeypatch, crash) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1
    assert "internal error: KeyError" in err


def test_debug_shows_the_traceback(monkeypatch, capsys) -> None:
    def crash(args):
        raise KeyError("boom")

    assert run_with(monkeypatch, crash, "--debug") == 70
    assert "Traceback" in capsys.readouterr().err


def test_interrupt_exits_130(monkeypatch, capsys) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    assert run_with(monkeypatch, interrupted) == 130
