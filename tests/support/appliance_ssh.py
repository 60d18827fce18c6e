"""Run a command on an imported test appliance the way a user does: ``ssh -F ssh.config NAME``."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ssh_output(workdir: Path, name: str, *command: str, timeout: float = 120) -> str:
    """stdout of ``command`` on appliance ``name``, through the ssh.config in ``workdir``."""
    return subprocess.run(
        ["ssh", "-F", "ssh.config", "-o", "BatchMode=yes", name, *command],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
