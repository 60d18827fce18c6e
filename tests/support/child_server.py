"""What the throwaway test servers (nginx, sshd) share.

Each runs as a child process in the foreground on a free 127.0.0.1 port,
with everything it writes in a private temporary directory that ``stop``
removes.  A subclass says how to write its configuration for a port, the
command line that runs it, and when it is ready.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self


def free_tcp_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChildServer:
    """A server process started by ``start`` and ended by ``stop``."""

    #: Used in temp directory names and in the "did not start" error.
    program = "server"
    #: The file in the work directory that receives the server's stderr.
    stderr_log = "stderr.log"
    #: Ports to try before giving up (one can be taken between choosing and binding).
    start_attempts = 5

    def __init__(self) -> None:
        self.port = 0
        self._workdir: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError(f"{self.program} is not running")
        return self._workdir

    # What a subclass provides.
    def _prepare(self, workdir: Path) -> None:
        """Once, before the first attempt: keys and the like."""

    def _configure(self, workdir: Path) -> list[str]:
        """Write the configuration for ``self.port``; return the command line."""
        raise NotImplementedError

    def _ready(self) -> bool:
        """One readiness probe: the port accepts connections."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self) -> Self:
        if self._process is not None:
            return self
        self._workdir = Path(tempfile.mkdtemp(prefix=f"test-{self.program}-"))
        self._prepare(self._workdir)
        for _attempt in range(self.start_attempts):
            self.port = free_tcp_port()
            command = self._configure(self._workdir)
            # The child keeps its own copy of the log's descriptor.
            with (self._workdir / self.stderr_log).open("wb") as stderr:
                self._process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
                )
            if self._wait_until_ready():
                return self
            self._process.kill()
            self._process.wait()
            self._process = None
        log = (self._workdir / self.stderr_log).read_text(errors="replace")
        raise RuntimeError(f"{self.program} did not start on 127.0.0.1:\n{log}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self.port = 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_ready(self, timeout: float = 10.0) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if self._ready():
                return True
            time.sleep(0.05)
        return False
