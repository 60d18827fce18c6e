"""Run a command on an imported test appliance the way a user does: ``ssh -F ssh.config NAME``."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ssh_output(
    workdir: Path, name: str, *command: str, timeout: float = 120, stdin: str | None = None
) -> str:
    """stdout of ``command`` on appliance ``name``, through the ssh.config in ``workdir``.

    ``stdin`` is the command's standard input (secrets go there, never on a command line).

    A failing command fails the test with its exit status and the end of its stderr.
    """
    completed = subprocess.run(
        ["ssh", "-F", "ssh.config", "-o", "BatchMode=yes", name, *command],
        cwd=workdir,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)!r} on {name} exited {completed.returncode}: "
            f"{completed.stderr[-1500:]}"
        )
    return completed.stdout
