"""Subcommands of this package (registered by undercloud_appliance.cli)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the main parser."""
