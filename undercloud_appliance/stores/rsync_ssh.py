"""``ssh://[user@]host[:port]/abs/path`` store: rsync and a POSIX shell over ssh.

- Small files are read with ``head -c`` (capped), the image with
  ``tail -c +OFFSET`` after a first line giving the file's size and version
  (size, mtime, inode): a download resumes where it broke off while the
  file is the same version, and restarts from 0 otherwise.
- The image is streamed through ``ssh host 'cat > <staging>/undercloud.qcow2'``
  so its sha256 and md5 are computed in the same (only) local read pass;
  the server then checks the size and runs ``sha256sum`` on what it holds.
- Small files (checksums, manifest, BUILD_ID, signature) go with ``rsync``,
  which writes to a temporary name and renames: atomic by design.
- Directory commit and labels are ``mv -T`` (rename(2)) and relative
  symlinks on the server, exactly as for ``file://``; the release lock is
  ``flock`` on the server, held for as long as an ssh session lives.

The ssh command line comes from ``UNDERCLOUD_APPLIANCE_SSH_COMMAND``
(like GIT_SSH_COMMAND; default ``ssh``), so keys, known hosts and jump hosts
are configured the usual way.  The server needs sh, coreutils, flock and rsync.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from undercloud_appliance.errors import (
    ChecksumError,
    NetworkError,
    NotFoundError,
    StoreError,
)
from undercloud_appliance.retry_policies import transient_failures
from undercloud_appliance.stores.base import (
    SMALL_FILE_LIMIT,
    STAGING_DIRECTORY,
    Download,
    InterruptedTransfer,
    Store,
    refuse_large,
    staging_name,
    temporary_name,
)
from undercloud_appliance.stores.credentials import redact_url
from undercloud_appliance.stores.digests import Digests

log = logging.getLogger(__name__)

SSH_COMMAND_ENV = "UNDERCLOUD_APPLIANCE_SSH_COMMAND"
LOCK_NAME = ".lock"
# Exit codes of our remote scripts (ssh itself uses 255).
MISSING = 44
EXISTS = 45
NOT_A_LABEL = 46
SSH_FAILED = 255
RSYNC_NETWORK_CODES = frozenset({10, 12, 30, 35, 255})
RETRY_ATTEMPTS = 4


class _SshTransient(Exception):
    def __init__(self, result: subprocess.CompletedProcess) -> None:
        super().__init__(_last_line(result.stderr))
        self.result = result


def _last_line(stderr: bytes | str | None) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


class RsyncSshStore(Store):
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if not parts.hostname or not parts.path.startswith("/"):
            raise StoreError(f"{redact_url(url)}: expected ssh://[user@]host[:port]/absolute/path")
        if parts.password is not None:
            raise StoreError(
                f"{redact_url(url)}: passwords in ssh:// URLs are not supported; use ssh keys"
            )
        self.display_url = redact_url(url)
        self.root = parts.path.rstrip("/") or "/"
        self.destination = (
            f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
        )
        self.port = parts.port
        self.ssh_command = shlex.split(os.environ.get(SSH_COMMAND_ENV) or "ssh")
        self._control_dir: str | None = None

    # -- plumbing ---------------------------------------------------------

    def _remote(self, path: str) -> str:
        return shlex.quote(f"{self.root}/{path}" if path else self.root)

    def _ssh_argv(self) -> list[str]:
        port = ["-p", str(self.port)] if self.port else []
        if self._control_dir is None:
            self._control_dir = tempfile.mkdtemp(prefix="undercloud-appliance-ssh-")
        # One ssh connection carries all commands of this run: a publish makes
        # a dozen remote calls and each new connection costs a key exchange.
        # The master exits in close(), or by itself shortly after a crash.
        multiplex = [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self._control_dir}/%C",
            "-o",
            "ControlPersist=30",
        ]
        return [*self.ssh_command, "-o", "ConnectTimeout=15", *multiplex, *port]

    def close(self) -> None:
        if self._control_dir is None:
            return
        subprocess.run(
            [*self._ssh_argv(), "-O", "exit", "--", self.destination],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    def _run(
        self, script: str, where: str, stdin: bytes | None = None, ok: tuple[int, ...] = (0,)
    ) -> subprocess.CompletedProcess:
        """Run ``script`` with the server's shell; retry when ssh could not connect."""
        argv = [*self._ssh_argv(), "--", self.destination, script]
        try:
            for attempt in transient_failures(
                _SshTransient, RETRY_ATTEMPTS, what="ssh to the store"
            ):
                with attempt:
                    result = subprocess.run(argv, input=stdin, capture_output=True, check=False)
                    if result.returncode == SSH_FAILED:
                        raise _SshTransient(result)
        except _SshTransient as error:
            raise NetworkError(f"{where}: ssh failed after retries: {error}") from None
        except FileNotFoundError:
            raise StoreError(f"{self.ssh_command[0]}: ssh client not found") from None
        if result.returncode == MISSING:
            raise NotFoundError(f"{where}: not found in the store")
        if result.returncode not in ok:
            raise StoreError(f"{where}: {_last_line(result.stderr)}")
        return result

    # -- Store ------------------------------------------------------------

    def list_names(self, path: str) -> list[str]:
        result = self._run(
            f"cd {self._remote(path)} 2>/dev/null || exit {MISSING}; ls -A", self.where(path)
        )
        return sorted(name for name in result.stdout.decode().splitlines() if name)

    def read_bytes(self, path: str, limit: int = SMALL_FILE_LIMIT) -> bytes:
        remote = self._remote(path)
        content = self._run(
            f"test -f {remote} || exit {MISSING}; head -c {limit + 1} {remote}", self.where(path)
        ).stdout
        return refuse_large(self, path, content, limit)

    def file_size(self, path: str) -> int | None:
        remote = self._remote(path)
        try:
            result = self._run(
                f"test -f {remote} || exit {MISSING}; stat -L -c %s {remote}", self.where(path)
            )
        except NotFoundError:
            return None
        return int(result.stdout.decode().strip())

    def modified_at(self, path: str) -> float | None:
        remote = self._remote(path)
        try:
            result = self._run(
                f"test -e {remote} || test -L {remote} || exit {MISSING}; stat -c %Y {remote}",
                self.where(path),
            )
        except NotFoundError:
            return None
        return float(result.stdout.decode().strip())

    def file_digests(self, path: str) -> Digests:
        remote = self._remote(path)
        result = self._run(
            f"test -f {remote} || exit {MISSING}; stat -L -c %s {remote} && "
            f"sha256sum < {remote} && md5sum < {remote}",
            self.where(path),
        )
        size, sha256, md5 = (line.split()[0] for line in result.stdout.decode().splitlines())
        return Digests(size=int(size), sha256=sha256, md5=md5)

    @contextmanager
    def open_download(
        self, path: str, offset: int = 0, validator: str | None = None
    ) -> Iterator[Download]:
        remote = self._remote(path)
        # First line: the file's version and where the bytes start; then the bytes.
        script = (
            f"test -f {remote} || exit {MISSING}; "
            f"version=$(stat -L -c %s-%Y-%i {remote}) || exit 1; start=0; "
            f'[ "$version" = {shlex.quote(validator or "")} ] && start={int(offset)}; '
            f'echo "$version $start"; exec tail -c +$((start + 1)) {remote}'
        )
        argv = [*self._ssh_argv(), "--", self.destination, script]
        with tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr)
            except FileNotFoundError:
                raise StoreError(f"{self.ssh_command[0]}: ssh client not found") from None
            assert process.stdout is not None
            try:
                download = _SshDownload(process, stderr, self.where(path))
                yield download
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
                process.stdout.close()

    def make_staging_directory(self, parent: str, final_name: str) -> str:
        staging = f"{parent}/{STAGING_DIRECTORY}/{staging_name(final_name)}"
        try:
            self._run(
                f"test -d {self._remote('')} || exit {MISSING}; "
                f"mkdir -p {self._remote(f'{parent}/{STAGING_DIRECTORY}')} && "
                f"mkdir {self._remote(staging)}",
                self.where(parent),
            )
        except NotFoundError:
            raise NotFoundError(f"{self.display_url}: store directory does not exist") from None
        return staging

    def upload(self, path: str, chunks: Iterable[bytes], size: int) -> None:
        argv = [*self._ssh_argv(), "--", self.destination, f"cat > {self._remote(path)}"]
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=stderr)
            assert process.stdin is not None
            try:
                for chunk in chunks:
                    process.stdin.write(chunk)
                process.stdin.close()
            except BrokenPipeError:
                pass  # ssh ended early: its exit code and stderr say why
            except BaseException:
                process.kill()
                process.wait()
                raise
            returncode = process.wait()
            if returncode != 0:
                stderr.seek(0)
                cause = _last_line(stderr.read())
                error = NetworkError if returncode == SSH_FAILED else StoreError
                raise error(f"{self.where(path)}: upload failed: {cause}")

    def write_bytes(self, path: str, content: bytes) -> None:
        directory, _, name = path.rpartition("/")
        self.write_files(directory, {name: content})

    def write_files(self, directory: str, files: dict[str, bytes]) -> None:
        # One rsync for all files; rsync writes each to a temporary name next
        # to its target and renames it: atomic per file.
        with tempfile.TemporaryDirectory(prefix="undercloud-appliance-") as local:
            for name, content in files.items():
                (Path(local) / name).write_bytes(content)
            argv = [
                "rsync",
                "--recursive",
                "--chmod=D755,F644",
                "--timeout=120",
                "-e",
                shlex.join(self._ssh_argv()),
                f"{local}/",
                f"{self.destination}:{self.root}/{directory}/",
            ]
            where = self.where(directory)
            try:
                for attempt in transient_failures(
                    _SshTransient, RETRY_ATTEMPTS, what="ssh to the store"
                ):
                    with attempt:
                        result = subprocess.run(argv, capture_output=True, check=False)
                        if result.returncode in RSYNC_NETWORK_CODES:
                            raise _SshTransient(result)
            except _SshTransient as error:
                raise NetworkError(f"{where}: rsync failed after retries: {error}") from None
            except FileNotFoundError:
                raise StoreError("rsync: not installed on this host") from None
            if result.returncode != 0:
                raise StoreError(f"{where}: rsync failed: {_last_line(result.stderr)}")

    def verify_upload(self, path: str, size: int, sha256: str) -> None:
        digests = self.file_digests(path) if sha256 else None
        actual_size = digests.size if digests else self.file_size(path)
        if actual_size != size:
            raise ChecksumError(
                f"{self.where(path)}: store holds {actual_size} bytes, expected {size}"
            )
        if digests and digests.sha256 != sha256:
            raise ChecksumError(
                f"{self.where(path)}: sha256 on the store is {digests.sha256}, expected {sha256}"
            )

    def commit_directory(self, staging: str, final: str) -> None:
        source, target = self._remote(staging), self._remote(final)
        # `sync FILES` makes the data durable before the rename publishes it.
        result = self._run(
            f"test -e {target} && exit {EXISTS}; sync {source}/* 2>/dev/null; "
            f"mv -T {source} {target}",
            self.where(final),
            ok=(0, EXISTS),
        )
        if result.returncode == EXISTS:
            raise StoreError(f"{self.where(final)}: already exists in the store")

    def remove_tree(self, path: str) -> None:
        self._run(f"rm -rf {self._remote(path)}", self.where(path))

    def point_label(self, release: str, label: str, build_id: str) -> str | None:
        release_dir = self._remote(release)
        name = shlex.quote(label)
        previous_name = shlex.quote(f"previous-{label}")
        build = shlex.quote(build_id)
        temporary = shlex.quote(temporary_name(label))
        script = f"""
cd {release_dir} || exit {MISSING}
test -d {build} || exit {MISSING}
if [ -e {name} ] && [ ! -L {name} ]; then exit {NOT_A_LABEL}; fi
old=$(readlink {name} || true)
if [ -n "$old" ] && [ "$old" != {build} ]; then
    ln -s "$old" {temporary} && mv -T {temporary} {previous_name} || exit 1
fi
ln -s {build} {temporary} && mv -T {temporary} {name} || exit 1
printf '%s\\n' "$old"
"""
        result = self._run(script, self.where(f"{release}/{label}"), ok=(0, NOT_A_LABEL))
        if result.returncode == NOT_A_LABEL:
            raise StoreError(f"{self.where(f'{release}/{label}')}: exists and is not a symlink")
        return result.stdout.decode().strip() or None

    @contextmanager
    def lock(self, release: str) -> Iterator[None]:
        lock_file = self._remote(f"{release}/{LOCK_NAME}")
        # The lock lives as long as this ssh session: closing our end of the
        # pipe ends `cat`, then flock; a crashed client's session dies too.
        script = (
            f"mkdir -p {self._remote(release)} && "
            f"exec flock {lock_file} sh -c 'echo locked; exec cat >/dev/null'"
        )
        argv = [*self._ssh_argv(), "--", self.destination, script]
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
            )
            assert process.stdin is not None and process.stdout is not None
            try:
                if process.stdout.readline().strip() != b"locked":
                    process.wait()
                    stderr.seek(0)
                    raise NetworkError(
                        f"{self.where(release)}: cannot take the lock: {_last_line(stderr.read())}"
                    )
                yield
            finally:
                process.stdin.close()
                process.wait()


class _SshDownload(Download):
    """The output of the ``open_download`` script, after its first line."""

    def __init__(self, process: subprocess.Popen, stderr: IO[bytes], where: str) -> None:
        assert process.stdout is not None
        self.process = process
        self.stdout = process.stdout
        self.stderr = stderr
        self.where = where
        self.position = 0
        header = self.stdout.readline().decode(errors="replace").split()
        if len(header) != 2:
            self._check_exit()
            raise StoreError(f"{where}: unexpected answer from the store's shell")
        self.validator, start = header
        self.offset = self.position = int(start)
        self.total_size = int(self.validator.split("-")[0])

    def read(self, size: int) -> bytes:
        try:
            chunk = self.stdout.read(size)
        except OSError as error:
            raise InterruptedTransfer(
                f"ssh output lost after {self.position} bytes: {error.strerror}"
            ) from None
        if not chunk:
            self._check_exit()
        self.position += len(chunk)
        return chunk

    def _check_exit(self) -> None:
        """At the end of the output: raise unless the remote side succeeded."""
        returncode = self.process.wait()
        if returncode == 0:
            return
        self.stderr.seek(0)
        cause = _last_line(self.stderr.read())
        if returncode == MISSING:
            raise NotFoundError(f"{self.where}: not found in the store")
        if returncode == SSH_FAILED:
            raise InterruptedTransfer(f"ssh failed after {self.position} bytes: {cause}")
        raise StoreError(f"{self.where}: {cause}")
