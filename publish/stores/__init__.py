"""Store backends, chosen by URL scheme.  See publish/stores/base.py."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from publish.stores.base import Store
from publish.stores.credentials import redact_url
from undercloud_appliance.errors import StoreError

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
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        from publish.stores.file import FileStore

        parts = urlsplit(url)
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
        from publish.stores.webdav import WebDavStore

        return WebDavStore(url)
    if scheme == "ssh":
        from publish.stores.rsync_ssh import RsyncSshStore

        return RsyncSshStore(url)
    shown = scheme or "none"
    raise StoreError(
        f"{redact_url(url)}: unsupported store URL scheme '{shown}' (use {', '.join(SCHEMES)})"
    )
