"""Store credentials, and URLs and errors that are safe to print.

Credentials come from, in order: ``UNDERCLOUD_APPLIANCE_STORE_USER`` and
``UNDERCLOUD_APPLIANCE_STORE_PASSWORD``, the URL's ``user:password@``
part, or ``~/.netrc`` (``$NETRC``).  They are never logged: everything the
tool prints about a store goes through ``redact_url``, and HTTP failures
through ``describe_request_error``.  Puddle URLs may carry a password the
same way: ``redact_urls_in_text`` and ``redact_urls_in`` apply ``redact_url``
to every URL in a message or in a JSON-like value (a profile, a manifest).
"""

from __future__ import annotations

import netrc
import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

USER_ENV = "UNDERCLOUD_APPLIANCE_STORE_USER"
PASSWORD_ENV = "UNDERCLOUD_APPLIANCE_STORE_PASSWORD"


# scheme://user:password@ -- the password runs to the authority's last "@"
# (an unencoded "@" in it is common); the authority ends at "/", "?" or "#".
_PASSWORD_IN_URL = re.compile(r"^(?P<start>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#]*@")
# A URL inside a message: up to whitespace, a quote or an angle bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` without a password (the user name stays: it helps debugging).

    Works on the text, not on a parsed URL: a malformed URL (a bad port, an
    unclosed IPv6 bracket) is redacted too, for the error that names it.
    """
    return _PASSWORD_IN_URL.sub(r"\g<start>@", url, count=1)


def redact_urls_in_text(text: str) -> str:
    """``text`` with every URL in it passed through ``redact_url``."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)


def redact_urls_in(value: Any) -> Any:
    """A copy of a JSON-like ``value`` with every string passed through ``redact_urls_in_text``."""
    if isinstance(value, str):
        return redact_urls_in_text(value)
    if isinstance(value, dict):
        return {key: redact_urls_in(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_urls_in(item) for item in value]
    return value


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
