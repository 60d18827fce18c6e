"""Store credentials, and URLs and errors that are safe to print.

Credentials come from, in order: ``UNDERCLOUD_APPLIANCE_STORE_USER`` and
``UNDERCLOUD_APPLIANCE_STORE_PASSWORD``, the URL's ``user:password@``
part, or ``~/.netrc`` (``$NETRC``).  They are never logged: everything the
tool prints about a store goes through ``redact_url``, and HTTP failures
through ``describe_request_error``.
"""

from __future__ import annotations

import netrc
import os
from urllib.parse import SplitResult, urlsplit, urlunsplit

import requests
import urllib3

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


def describe_request_error(error: BaseException | None) -> str:
    """An HTTP client failure as a short phrase on one line.

    requests and urllib3 wrap the cause in several layers whose messages
    repeat the URL, which may carry a password: only the cause is named.
    """
    if error is None:
        return "unknown error"
    if isinstance(error, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(error, requests.ConnectionError | urllib3.exceptions.HTTPError | OSError):
        text = " ".join(str(cause) for cause in _causes(error))
        if "refused" in text:
            return "connection refused"
        if "reset" in text:
            return "connection reset"
        if any(
            word in text
            for word in (
                "Name or service not known",
                "name resolution",
                "nodename nor servname",
                "resolve",
            )
        ):
            return "host name does not resolve"
        return "connection failed"
    if isinstance(error, requests.RequestException):
        return type(error).__name__
    # Our own exceptions say what happened without a URL ("HTTP 503").
    lines = str(error).splitlines()
    return lines[0][:200] if lines else type(error).__name__


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and what it wraps (``reason``, ``__cause__``, ``__context__``)."""
    causes = [error]
    while len(causes) < 10:
        inner = (
            getattr(causes[-1], "reason", None) or causes[-1].__cause__ or causes[-1].__context__
        )
        if not isinstance(inner, BaseException) or inner in causes:
            break
        causes.append(inner)
    return causes


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
