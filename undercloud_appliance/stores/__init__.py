"""Store backends, chosen by URL scheme: ``open_store(url)``.

``publish`` writes stores and ``importer`` reads them, both only through
the interface in ``base.py``; each backend is one module with both sides:
``file.py`` (``file://``), ``webdav.py`` (``http(s)://``: WebDAV, or any
plain HTTP server for reading) and ``rsync_ssh.py`` (``ssh://``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from undercloud_appliance.errors import StoreError
from undercloud_appliance.stores.base import Store
from undercloud_appliance.stores.credentials import redact_url

STORE_ENV = "UNDERCLOUD_APPLIANCE_STORE"
SCHEMES = ("file://", "http://", "https://", "ssh://")


def default_store_url() -> str:
    """``$UNDERCLOUD_APPLIANCE_STORE`` or the embedded store under the user's data dir."""
    configured = os.environ.get(STORE_ENV)
    if configured:
        return configured
    return f"file://{embedded_store_root()}"


def embedded_store_root() -> Path:
    return Path.home() / ".local" / "share" / "undercloud-appliance" / "store"


def open_store(url: str | None) -> Store:
    """The backend for ``url`` (None: the default store)."""
    url = url or default_store_url()
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsed on access: a bad port fails here, not deep in a backend
    except ValueError as error:
        raise StoreError(f"{redact_url(url)}: not a valid store URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme == "file":
        from undercloud_appliance.stores.file import FileStore

        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"{redact_url(url)}: file:// URLs cannot name a host")
        root = Path(unquote(parts.path))
        if not root.is_absolute():
            raise StoreError(f"{redact_url(url)}: file:// URLs need an absolute path")
        if root == embedded_store_root():
            # The embedded default store is created on first use.
            root.mkdir(parents=True, exist_ok=True)
        return FileStore(root, redact_url(url))
    if scheme in ("http", "https"):
        from undercloud_appliance.stores.webdav import WebDavStore

        return WebDavStore(url)
    if scheme == "ssh":
        from undercloud_appliance.stores.rsync_ssh import RsyncSshStore

        return RsyncSshStore(url)
    shown = scheme or "none"
    raise StoreError(
        f"{redact_url(url)}: unsupported store URL scheme '{shown}' (use {', '.join(SCHEMES)})"
    )
