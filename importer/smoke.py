"""Smoke commands: the profile's own check that an appliance works, run over ssh.

The build's bake stage records a smoke result in the manifest; the importer
runs the same commands after an import and after every online update, as
the appliance user, through the ``ssh.config`` it wrote.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from importer.handoff import ssh_command
from undercloud_appliance.errors import ApplianceError

log = logging.getLogger(__name__)

SMOKE_TIMEOUT_SECONDS = 900
OUTPUT_TAIL_LINES = 25


class SmokeError(ApplianceError):
    """A smoke command failed in an appliance that is otherwise up."""

    exit_code = 10


def smoke_commands(manifest: Mapping[str, Any]) -> list[str]:
    undercloud = (manifest["profile"].get("resolved") or {}).get("undercloud") or {}
    return [str(command) for command in undercloud.get("smoke_commands") or []]


def run_smoke_commands(
    ssh_config: Path, name: str, manifest: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Run every smoke command (even after one fails); one result each, in order."""
    results = []
    for command in smoke_commands(manifest):
        started = time.monotonic()
        try:
            completed = subprocess.run(
                # Profile content (reviewed like code), run by the login shell on purpose.
                ssh_command(ssh_config, name, command),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=SMOKE_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            returncode, output = completed.returncode, completed.stdout + completed.stderr
        except subprocess.TimeoutExpired:
            returncode, output = 124, f"timed out after {SMOKE_TIMEOUT_SECONDS} s"
        results.append(
            {
                "command": command,
                "returncode": returncode,
                "seconds": round(time.monotonic() - started, 3),
                "output_tail": "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:]),
            }
        )
        log.info("smoke %r: exit %d", command, returncode)
    return results


def first_failure(results: list[dict[str, Any]]) -> str | None:
    """``command 'x' failed (exit status N): last line`` for the first failed result."""
    for result in results:
        if result["returncode"] != 0:
            lines = [line for line in result["output_tail"].splitlines() if line.strip()]
            last = lines[-1].strip() if lines else "no output"
            return (
                f"smoke command {result['command']!r} failed "
                f"(exit status {result['returncode']}): {last}"
            )
    return None
