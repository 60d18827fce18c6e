"""Store credentials and URLs that are safe to print.

Credentials come from, in order: ``UNDERCLOUD_APPLIANCE_STORE_USER`` and
``UNDERCLOUD_APPLIANCE_STORE_PASSWORD``, the URL's ``user:password@``
part, or ``~/.netrc`` (``$NETRC``).  They are never logged: everything the
tool prints about a store goes through ``redact_url``.
"""

from __future__ import annotations

import netrc
import os
from urllib.parse import SplitResult, urlsplit, urlunsplit

USER_ENV = "UNDERCLOUD_APPLIANCE_STORE_USER"
PASSWORD_ENV = "UNDERCLOUD_APPLIANCE_STORE_PASSWORD"


def redact_url(url: str) -> str:
    """``url`` without a password (the user name stays: it helps debugging)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=_netloc(parts, include_password=False)))


def url_without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def store_credentials(url: str) -> tuple[str, str] | None:
    """(user, password) for an HTTP store, or None to send no credentials."""
    user = os.environ.get(USER_ENV)
    password = os.environ.get(PASSWORD_ENV)
    if user is not None and password is not None:
        return user, password
    parts = urlsplit(url)
    if parts.username is not None and parts.password is not None:
        return parts.username, parts.password
    return _netrc_credentials(parts.hostname or "")


def _netrc_credentials(host: str) -> tuple[str, str] | None:
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    if entry is None:
        return None
    login, _account, password = entry
    return (login, password or "") if login else None


def _netloc(parts: SplitResult, include_password: bool) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username is None:
        return host
    if include_password and parts.password is not None:
        return f"{parts.username}:{parts.password}@{host}"
    return f"{parts.username}@{host}"
