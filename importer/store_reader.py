"""Read a store (``file://`` or ``http(s)://``) laid out as docs/store-layout.rst says.

Small files (``BUILD_ID``, ``*.sha256``, ``manifest.json``, ``SHA256SUMS``)
are read whole; the image is streamed by ``importer.download``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests
import tenacity

from undercloud_appliance.errors import ApplianceError, NetworkError, NotFoundError, StoreError

SMALL_FILE_LIMIT = 16 * 1024 * 1024
SMALL_FILE_ATTEMPTS = 3
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
USER_AGENT = "undercloud-appliance-importer"


@dataclass(frozen=True)
class StoreReader:
    """A store URL and how to read relative paths below it."""

    url: str
    session: requests.Session | None = None

    @classmethod
    def open(cls, url: str) -> StoreReader:
        scheme = urlsplit(url).scheme
        if scheme == "file":
            root = cls._file_root(url)
            if not root.is_dir():
                raise NotFoundError(f"store {url}: no such directory {root}")
            return cls(url.rstrip("/"))
        if scheme in ("http", "https"):
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            # Hash exactly the bytes that were published: no transparent gzip.
            session.headers["Accept-Encoding"] = "identity"
            return cls(url.rstrip("/"), session)
        raise ApplianceError(f"store URL {url!r}: use file://, http:// or https://")

    @staticmethod
    def _file_root(url: str) -> Path:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ApplianceError(f"store URL {url!r}: file:// URLs name a local path")
        return Path(unquote(parts.path))

    @property
    def is_local(self) -> bool:
        return self.session is None

    def local_path(self, relpath: str) -> Path:
        return self._file_root(self.url) / relpath

    def file_url(self, relpath: str) -> str:
        return f"{self.url}/{relpath}"

    def read_bytes(self, relpath: str) -> bytes:
        """The whole (small) file; NotFoundError naming it when absent."""
        if self.session is None:
            path = self.local_path(relpath)
            try:
                if path.stat().st_size > SMALL_FILE_LIMIT:
                    raise StoreError(f"{path}: larger than {SMALL_FILE_LIMIT} bytes")
                return path.read_bytes()
            except FileNotFoundError:
                raise NotFoundError(f"{path}: not found in the store") from None
            except OSError as error:
                raise StoreError(f"{path}: cannot read: {error.strerror}") from None
        return self._small_file_retrying(self._get_small_file, self.file_url(relpath))

    def _get_small_file(self, url: str) -> bytes:
        response = self.request("GET", url)
        with response:
            if response.status_code == 404:
                raise NotFoundError(f"{url}: not found (HTTP 404)")
            if response.status_code >= 500:
                raise NetworkError(f"{url}: HTTP {response.status_code}")
            if response.status_code != 200:
                raise StoreError(f"{url}: HTTP {response.status_code}")
            return response.content[: SMALL_FILE_LIMIT + 1]

    # Small reads retry briefly: a store restarting answers within a second or two,
    # and an unreachable one is reported in about 1.5 s.
    _small_file_retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(NetworkError),
        stop=tenacity.stop_after_attempt(SMALL_FILE_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=0.5, max=2),
        reraise=True,
    )

    def read_text(self, relpath: str) -> str:
        return self.read_bytes(relpath).decode("utf-8", errors="replace")

    def exists(self, relpath: str) -> bool:
        if self.session is None:
            return self.local_path(relpath).is_file()
        url = self.file_url(relpath)
        with self.request("HEAD", url) as response:
            return response.status_code == 200

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        """One HTTP request, redirects followed; connection failures are NetworkError."""
        assert self.session is not None
        kwargs.setdefault("timeout", (CONNECT_TIMEOUT, READ_TIMEOUT))
        kwargs.setdefault("allow_redirects", True)
        try:
            return self.session.request(method, url, **kwargs)
        except requests.ConnectionError as error:
            raise NetworkError(f"{url}: cannot connect: {_short_reason(error)}") from None
        except requests.Timeout:
            raise NetworkError(f"{url}: timed out") from None
        except requests.RequestException as error:
            raise NetworkError(f"{url}: {_short_reason(error)}") from None


def _short_reason(error: Exception) -> str:
    """The innermost reason of a requests/urllib3 error, on one line."""
    reason: BaseException = error
    while True:
        inner = getattr(reason, "reason", None) or reason.__cause__ or reason.__context__
        if inner is None or inner is reason or not isinstance(inner, BaseException):
            break
        reason = inner
    text = str(reason) or type(reason).__name__
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return text.splitlines()[0][:200]
