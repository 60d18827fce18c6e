"""Puddles: dated, immutable snapshots of a release's package repositories.

A profile's ``puddle`` section (carried into every manifest) holds URL
templates.  Templates use ``{name}`` or ``{name[a:b]}`` (a slice, for DLRN
hash paths like ``{puddle_id[0:2]}/{puddle_id[2:4]}/{puddle_id}``) with the
variables ``base_url``, ``puddle_id``, ``label`` and ``release``.

A *label* (``latest``, ``current-passed-ci``) names a document at
``labels.url`` from which ``labels.pattern`` (a regex with a group named
``id``) extracts the pinned id.  Builds and updates always record the id,
never the label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from undercloud_appliance.errors import ApplianceError, NetworkError, NotFoundError
from undercloud_appliance.retry_policies import transient_failures
from undercloud_appliance.stores.credentials import describe_request_error, redact_url

TEMPLATE_FIELD = re.compile(r"\{([a-z_]+)(?:\[(\d*):(\d*)\])?\}")
TEMPLATE_VARIABLES = frozenset({"base_url", "puddle_id", "label", "release"})
NO_PUDDLE = "none"
RESOLVE_TIMEOUT = (10, 30)
RESOLVE_ATTEMPTS = 4


class TemplateError(ApplianceError):
    """A URL template names an unknown variable or has a stray brace."""

    exit_code = 2


def template_variables(template: str) -> set[str]:
    """Variables a template uses; raises TemplateError on unknown ones."""
    names = {match.group(1) for match in TEMPLATE_FIELD.finditer(template)}
    unknown = names - TEMPLATE_VARIABLES
    if unknown:
        raise TemplateError(
            f"template {template!r} uses unknown variable(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(TEMPLATE_VARIABLES))}"
        )
    leftover = TEMPLATE_FIELD.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise TemplateError(f"template {template!r} has an unmatched or malformed brace")
    return names


def render_template(template: str, variables: Mapping[str, str]) -> str:
    """Render ``template``; every variable it uses must be given."""
    template_variables(template)

    def substitute(match: re.Match[str]) -> str:
        name, start, stop = match.groups()
        if name not in variables or variables[name] is None:
            raise TemplateError(f"template {template!r} needs a value for '{name}'")
        value = str(variables[name])
        if start is not None or stop is not None:
            value = value[int(start) if start else None : int(stop) if stop else None]
        return value

    return TEMPLATE_FIELD.sub(substitute, template)


def render_repos(puddle: Mapping[str, Any], puddle_id: str, release: str) -> list[dict[str, Any]]:
    """The puddle's repositories with their URLs rendered for ``puddle_id``."""
    variables = {"base_url": puddle.get("base_url", ""), "puddle_id": puddle_id, "release": release}
    repos = []
    for repo in puddle.get("repos", []):
        rendered = dict(repo)
        rendered["url"] = render_template(repo["url"], variables)
        repos.append(rendered)
    return repos


def looks_like_label(puddle: Mapping[str, Any], requested: str) -> bool:
    """A request is a pinned id when it matches ``id_pattern``; else a label."""
    return not re.fullmatch(puddle["id_pattern"], requested)


def _fetch_text(url: str) -> str:
    if url.startswith("file://"):
        try:
            with open(url.removeprefix("file://"), encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            raise NotFoundError(f"puddle label document {redact_url(url)} does not exist") from None
    return _fetch_http_text(url)


def _get(url: str) -> requests.Response:
    retrying = transient_failures(
        (requests.ConnectionError, requests.Timeout), RESOLVE_ATTEMPTS, max_wait=4
    )
    return retrying(requests.get, url, timeout=RESOLVE_TIMEOUT)


def _fetch_http_text(url: str) -> str:
    shown = redact_url(url)
    try:
        response = _get(url)
    except requests.RequestException as error:
        raise NetworkError(
            f"cannot reach puddle server at {shown}: {describe_request_error(error)}"
        ) from None
    if response.status_code == 404:
        raise NotFoundError(f"puddle label document {shown} does not exist (HTTP 404)")
    if response.status_code >= 400:
        raise NetworkError(f"puddle server answered HTTP {response.status_code} for {shown}")
    return response.text


def resolve_puddle(puddle: Mapping[str, Any], requested: str | None, release: str) -> str | None:
    """Pin ``requested`` (an id, a label, ``none`` or None for the default).

    Returns the puddle id, or None when no puddle repositories are used
    (``none``, or a profile without ``base_url``).
    """
    requested = requested or puddle.get("default") or NO_PUDDLE
    if requested == NO_PUDDLE:
        return None
    if not puddle.get("base_url"):
        raise ApplianceError(
            f"puddle {requested!r} requested but the profile has no puddle.base_url "
            "(set one, or use --puddle-base URL)"
        )
    if not looks_like_label(puddle, requested):
        return requested
    labels = puddle.get("labels") or {}
    if not labels.get("url"):
        raise ApplianceError(
            f"{requested!r} is not a puddle id (pattern {puddle['id_pattern']}) and the "
            "profile defines no puddle.labels.url to resolve labels"
        )
    url = render_template(
        labels["url"], {"base_url": puddle["base_url"], "label": requested, "release": release}
    )
    text = _fetch_text(url)
    match = re.search(labels.get("pattern", r"(?P<id>\S+)"), text, re.MULTILINE)
    if not match or not match.groupdict().get("id"):
        raise NotFoundError(f"puddle label {requested!r} resolves to nothing ({redact_url(url)})")
    puddle_id = match.group("id")
    if looks_like_label(puddle, puddle_id):
        raise NotFoundError(
            f"puddle label {requested!r} resolved to {puddle_id!r}, which is not a puddle id "
            f"(pattern {puddle['id_pattern']})"
        )
    return puddle_id


def check_repo_exists(url: str, puddle_id: str) -> None:
    """Fail early, before anything changes, when a puddle's repository is not there.

    Only a definite answer counts: HTTP 404 (or a missing ``file://``
    directory) is an unknown puddle, no answer is an unreachable server;
    other statuses (403 on a server without directory listings) pass.
    """
    shown = redact_url(url)
    if url.startswith("file://"):
        if not Path(url.removeprefix("file://")).is_dir():
            raise NotFoundError(f"puddle {puddle_id}: repository {shown} does not exist")
        return
    try:
        response = _get(url.rstrip("/") + "/")
    except requests.RequestException as error:
        raise NetworkError(
            f"puddle {puddle_id}: cannot reach {shown}: {describe_request_error(error)}"
        ) from None
    if response.status_code == 404:
        raise NotFoundError(f"puddle {puddle_id}: repository {shown} does not exist (HTTP 404)")
