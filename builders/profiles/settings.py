"""The one table of release profile settings.

``SETTINGS`` drives everything the loader does with a resolved profile:
which keys exist (anything else is an unknown setting), their types and
allowed values, their defaults, which are required, and the reference
documentation (``docs/profile-settings.rst`` is generated from it).

Each value kind checks a value and describes itself for the docs.  A check
raises ``Invalid(path, message)``; the loader turns that into a one-line
``ProfileError`` naming the file and line the value came from.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from undercloud_appliance.puddles import TemplateError, template_variables


class Invalid(Exception):
    """A value at ``path`` (dotted key, ``[n]`` for list items) is wrong."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class Required:
    """Marks a setting without a default: a release must set it."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = Required()

MAX_SHOWN_VALUE = 80
PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def join_key(path: str, key: str) -> str:
    """``path.key``; a key that is not a plain name is quoted, so paths stay one line."""
    part = key if PLAIN_KEY.fullmatch(key) else repr(key)
    return f"{path}.{part}" if path else part


def shown(value: Any) -> str:
    """A value as error messages quote it: repr, one line, not too long."""
    text = repr(value)
    if len(text) > MAX_SHOWN_VALUE:
        text = text[: MAX_SHOWN_VALUE - 3] + "..."
    return text


def type_name(value: Any) -> str:
    """The YAML-ish name of a value's type, for 'expected X, got Y'."""
    names = {
        type(None): "null",
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "list",
        dict: "mapping",
    }
    return names.get(type(value), type(value).__name__)


def expected(path: str, what: str, value: Any) -> Invalid:
    """``expected <what>, got <type> <value>``, with a hint when quoting would fix it."""
    if value is None:
        return Invalid(path, f"expected {what}, got no value (null)")
    # YAML reads 17.1 as a float, 9 as an integer and 2024-01-01 as a date:
    # quoting keeps text text.
    quotable = isinstance(value, int | float | datetime.date) and not isinstance(value, bool)
    hint = f" (quote it: '{value}')" if "string" in what and quotable else ""
    return Invalid(path, f"expected {what}, got {type_name(value)} {shown(value)}{hint}")


class Kind:
    """How one setting's value is checked and described."""

    def check(self, value: Any, path: str) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Kind):
    """A string, optionally matching ``pattern`` (a full match)."""

    pattern: str | None = None
    what: str = "string"
    description: str | None = None

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise expected(path, "a string", value)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Invalid(path, f"{shown(value)} is not a valid {self.what}")

    def describe(self) -> str:
        return self.description or self.what


@dataclass(frozen=True)
class Url(Kind):
    """An absolute URL (http, https, ftp or file), or "" when allowed."""

    allow_empty: bool = False
    schemes: tuple[str, ...] = ("http", "https", "ftp", "file")

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise expected(path, "a URL string", value)
        if value == "" and self.allow_empty:
            return
        if not _is_url(value, self.schemes):
            schemes = ", ".join(self.schemes)
            raise Invalid(path, f"{shown(value)} is not a URL ({schemes})")

    def describe(self) -> str:
        return 'URL or ""' if self.allow_empty else "URL"


def _is_url(value: str, schemes: Sequence[str]) -> bool:
    if re.search(r"[\s\"'<>\\^`{|}]", value):
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if parts.scheme not in schemes:
        return False
    return bool(parts.path) if parts.scheme == "file" else bool(parts.hostname)


@dataclass(frozen=True)
class Template(Kind):
    """A URL template for undercloud_appliance.puddles, using ``variables`` only."""

    variables: frozenset[str]

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise expected(path, "a URL template string", value)
        try:
            used = template_variables(value)
        except TemplateError as error:
            raise Invalid(path, str(error)) from None
        unavailable = used - self.variables
        if unavailable:
            raise Invalid(
                path,
                f"template {shown(value)} uses {', '.join(sorted(unavailable))}, which is not "
                f"available here (available: {', '.join(sorted(self.variables))})",
            )

    def describe(self) -> str:
        names = ", ".join(f"``{{{name}}}``" for name in sorted(self.variables))
        return f"URL template ({names})"


@dataclass(frozen=True)
class Regex(Kind):
    """A Python regular expression, optionally with named groups."""

    groups: tuple[str, ...] = ()

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise expected(path, "a regular expression string", value)
        try:
            compiled = re.compile(value)
        except (re.error, RecursionError, OverflowError, ValueError) as error:
            message = f"{shown(value)} is not a valid regular expression: {error}"
            raise Invalid(path, message) from None
        missing = [name for name in self.groups if name not in compiled.groupindex]
        if missing:
            groups = ", ".join(f"(?P<{name}>...)" for name in missing)
            raise Invalid(path, f"regular expression {shown(value)} needs the group {groups}")

    def describe(self) -> str:
        if self.groups:
            return "regex with group " + ", ".join(f"``(?P<{name}>...)``" for name in self.groups)
        return "regex"


@dataclass(frozen=True)
class Choice(Kind):
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or value not in self.values:
            choices = ", ".join(self.values)
            raise Invalid(path, f"{shown(value)} is not one of: {choices}")

    def describe(self) -> str:
        return " | ".join(f"``{value}``" for value in self.values)


@dataclass(frozen=True)
class Boolean(Kind):
    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise expected(path, "true or false", value)

    def describe(self) -> str:
        return "boolean"


@dataclass(frozen=True)
class Integer(Kind):
    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise expected(path, "an integer", value)
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise Invalid(path, f"{value} is not in the range {self.describe_range()}")

    def describe_range(self) -> str:
        low = "" if self.minimum is None else str(self.minimum)
        high = "" if self.maximum is None else str(self.maximum)
        return f"{low}..{high}"

    def describe(self) -> str:
        if self.minimum is None and self.maximum is None:
            return "integer"
        return f"integer {self.describe_range()}"


@dataclass(frozen=True)
class ListOf(Kind):
    item: Kind

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise expected(path, "a list", value)
        for index, item in enumerate(value):
            self.item.check(item, f"{path}[{index}]")

    def describe(self) -> str:
        return f"list of {self.item.describe()}"


@dataclass(frozen=True)
class MapOf(Kind):
    key: Text
    value: Kind

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise expected(path, "a mapping", value)
        for key, item in value.items():
            self.key.check(key, join_key(path, key))
            self.value.check(item, join_key(path, key))

    def describe(self) -> str:
        return f"mapping of {self.key.describe()} to {self.value.describe()}"


@dataclass(frozen=True)
class Records(Kind):
    """A list of mappings whose fields are the settings ``<key>[].<field>``."""

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise expected(path, "a list of mappings", value)
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise expected(f"{path}[{index}]", "a mapping", item)

    def describe(self) -> str:
        return "list of mappings (fields below)"


@dataclass(frozen=True)
class Ipv4(Kind):
    """An IPv4 address, or with ``interface`` an address with its prefix (``192.0.2.1/24``)."""

    interface: bool = False

    def check(self, value: Any, path: str) -> None:
        what = "an IPv4 address/prefix" if self.interface else "an IPv4 address"
        if not isinstance(value, str):
            raise expected(path, f"{what} string", value)
        try:
            if self.interface:
                if "/" not in value:
                    raise ValueError("no prefix length")
                ipaddress.IPv4Interface(value)
            else:
                ipaddress.IPv4Address(value)
        except ValueError:
            raise Invalid(path, f"{shown(value)} is not {what}") from None

    def describe(self) -> str:
        return "IPv4 address/prefix" if self.interface else "IPv4 address"


Constraint = Callable[[Any, Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class Setting:
    """One setting: dotted ``key`` (``a.b[].c`` for a field of list items)."""

    key: str
    kind: Kind
    doc: str
    default: Any = REQUIRED
    # (dotted key, value): the setting exists only when that key has that value.
    only_if: tuple[str, str] | None = None
    # Set by the loader, never by a file.
    derived: bool = False
    # A check involving other settings, and its description for the docs.
    constraint: Constraint | None = None
    constraint_doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and not self.derived


@dataclass(frozen=True)
class Section:
    """A mapping of settings (``distro``, ``puddle.labels``)."""

    key: str
    doc: str


# Names that end up in shell commands, file names or DIB arguments: a
# conservative character set, so no quoting is ever needed.
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
PACKAGE_NAME = r"[A-Za-z0-9][A-Za-z0-9._+:-]*"
HOSTNAME = r"(?=.{1,253}\Z)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*"
POSIX_USER = r"[a-z_][a-z0-9_-]{0,31}"
KERNEL_ARG = r"[A-Za-z0-9_.,:=/+@%-]+"
EXTENDS_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*"
DIB_VARIABLE = r"DIB_[A-Z0-9_]+"
NO_NUL_TEXT = r"[^\x00]*"
# One line each: the builder hands commands to the image one per line.
SHELL_COMMAND = r"[^\x00\n\r]*\S[^\x00\n\r]*"

PACKAGE_MANAGERS_BY_FAMILY = {"debian": "apt", "centos": "dnf", "rhel": "dnf"}
APT_ONLY = ("puddle.package_manager", "apt")
DNF_ONLY = ("puddle.package_manager", "dnf")
REPO_TEMPLATE_VARIABLES = frozenset({"base_url", "puddle_id", "release"})
LABEL_TEMPLATE_VARIABLES = frozenset({"base_url", "label", "release"})


def package_manager_matches_family(value: Any, data: Mapping[str, Any]) -> str | None:
    family = data.get("distro", {}).get("family")
    wanted = PACKAGE_MANAGERS_BY_FAMILY.get(family)
    if wanted is not None and value != wanted:
        return f"{shown(value)} does not fit distro.family {family!r} (use {wanted!r})"
    return None


def in_provisioning_network(value: Any, data: Mapping[str, Any]) -> str | None:
    """A DHCP range end inside the provisioning network, not the appliance's own address."""
    try:
        interface = ipaddress.IPv4Interface(data["provisioning"]["address"])
        address = ipaddress.IPv4Address(value)
    except (KeyError, TypeError, ValueError):
        return None  # the address settings report their own errors
    if address not in interface.network or address in (
        interface.network.network_address,
        interface.network.broadcast_address,
    ):
        return f"{shown(value)} is not a host address in provisioning.address's {interface.network}"
    if address == interface.ip:
        return f"{shown(value)} is the appliance's own provisioning.address"
    return None


def dhcp_range_ordered(value: Any, data: Mapping[str, Any]) -> str | None:
    problem = in_provisioning_network(value, data)
    if problem:
        return problem
    try:
        start = ipaddress.IPv4Address(data["provisioning"]["dhcp_start"])
        end = ipaddress.IPv4Address(value)
    except (KeyError, TypeError, ValueError):
        return None
    interface = ipaddress.IPv4Interface(data["provisioning"]["address"])
    if end < start:
        return f"{shown(value)} comes before provisioning.dhcp_start {str(start)!r}"
    if start <= interface.ip <= end:
        return f"the range from {str(start)!r} holds the appliance's own {str(interface.ip)!r}"
    return None


# upper-constraints-<name>.txt files, one per OpenStack series, for the IPA ramdisk.
CONSTRAINTS_DIR = Path(__file__).resolve().parents[1] / "constraints"


def constraints_file_exists(value: Any, data: Mapping[str, Any]) -> str | None:
    if not isinstance(value, str) or (CONSTRAINTS_DIR / f"upper-constraints-{value}.txt").is_file():
        return None
    known = sorted(
        path.name.removeprefix("upper-constraints-").removesuffix(".txt")
        for path in CONSTRAINTS_DIR.glob("upper-constraints-*.txt")
    )
    return f"{shown(value)} has no file in builders/constraints (known: {', '.join(known)})"


def _commands(key: str, doc: str) -> Setting:
    command = Text(SHELL_COMMAND, "shell command (one non-empty line)", "shell command")
    return Setting(key, ListOf(command), doc, [])


SETTINGS: tuple[Setting | Section, ...] = (
    Setting(
        "name",
        Text(NAME, "profile name"),
        "The profile's name: its file name without ``.yaml``.  Set by the loader; "
        "a file cannot set it.",
        derived=True,
    ),
    Setting(
        "release",
        Text(NAME, "release name"),
        "The OpenStack release the appliance carries (``zed``, ``17.1``).  Offered to "
        "URL templates as ``{release}``.  Required in every buildable release profile.",
    ),
    Setting("description", Text(NO_NUL_TEXT), "One line for humans.", ""),
    Setting(
        "extends",
        Text(f"(?:{EXTENDS_NAME})?", "profile name (relative to release-profiles/, no .yaml)"),
        "The profile this one is based on, relative to ``release-profiles/`` and without "
        "``.yaml`` (``bases/debian``); "
        " for none.  See *Inheritance* above.",
        "",
    ),
    Section("distro", "The operating system the appliance is built from."),
    Setting(
        "distro.family",
        Choice(("debian", "centos", "rhel")),
        "Distribution family; decides the package manager.",
    ),
    Setting(
        "distro.release",
        Text(NAME, "distro release"),
        "Distribution release (``bookworm``, ``9-stream``, ``9.2``).",
    ),
    Setting(
        "distro.base_element",
        Text(NAME, "element name"),
        "The diskimage-builder operating system element (``debian-minimal``, ``centos``, "
        "``rhel``).  ``profiles validate`` checks it exists in diskimage-builder or in "
        "``elements/``.",
    ),
    Setting("distro.mirror", Url(), "Package mirror of the distribution."),
    Setting(
        "distro.security_mirror",
        Url(allow_empty=True),
        'Security updates mirror, "" for none.',
        "",
    ),
    Section(
        "puddle",
        "Dated, immutable snapshots of the release's packages (see "
        "``undercloud_appliance/puddles.py``).",
    ),
    Setting(
        "puddle.package_manager",
        Choice(("apt", "dnf")),
        "Package manager of the repositories below.",
        constraint=package_manager_matches_family,
        constraint_doc="``apt`` for the debian family, ``dnf`` for centos and rhel.",
    ),
    Setting(
        "puddle.base_url",
        Url(allow_empty=True),
        'Where puddles live; ``{base_url}`` in templates.  "" means no puddle '
        "repositories: the distro mirror only (a build may still pass one).",
        "",
    ),
    Setting(
        "puddle.id_pattern",
        Regex(),
        "A requested puddle that fully matches this is a pinned id; anything else is a label.",
    ),
    Setting(
        "puddle.default",
        Text(r"[A-Za-z0-9][A-Za-z0-9._+:-]*", "puddle id or label"),
        "Puddle used when a build asks for none: an id, a label, or ``none`` (distro mirror only).",
        "none",
    ),
    Setting(
        "puddle.repos",
        Records(),
        "Repositories of a pinned puddle, rendered with ``{base_url}``, ``{puddle_id}`` "
        "and ``{release}``.",
        [],
    ),
    Setting(
        "puddle.repos[].name",
        Text(NAME, "repository name"),
        "Repository name (a file name in sources.list.d or yum.repos.d).",
    ),
    Setting(
        "puddle.repos[].url",
        Template(REPO_TEMPLATE_VARIABLES),
        "Repository URL (``baseurl``, or the ``.repo`` file for ``type: repo-file``).",
    ),
    Setting(
        "puddle.repos[].suite",
        Text(r"[A-Za-z0-9._/-]+", "apt suite"),
        "apt suite; ``./`` for a flat repository.",
        "./",
        only_if=APT_ONLY,
    ),
    Setting(
        "puddle.repos[].components",
        ListOf(Text(NAME, "apt component")),
        "apt components (empty for a flat repository).",
        [],
        only_if=APT_ONLY,
    ),
    Setting(
        "puddle.repos[].trusted",
        Boolean(),
        "apt ``[trusted=yes]``: accept the repository unsigned.",
        False,
        only_if=APT_ONLY,
    ),
    Setting(
        "puddle.repos[].type",
        Choice(("baseurl", "repo-file")),
        "dnf: ``baseurl`` (``url`` is the repository) or ``repo-file`` (``url`` is a "
        "``.repo`` file to install, which defines its own repositories).",
        "baseurl",
        only_if=DNF_ONLY,
    ),
    Setting(
        "puddle.repos[].gpgcheck",
        Boolean(),
        "dnf ``gpgcheck`` for a ``baseurl`` repository (a repo file sets its own).",
        True,
        only_if=DNF_ONLY,
    ),
    Setting(
        "puddle.repos[].priority",
        Integer(1, None),
        "dnf ``priority`` for a ``baseurl`` repository (lower wins).",
        99,
        only_if=DNF_ONLY,
    ),
    Section(
        "puddle.labels",
        "How a label (``latest``, ``current-tripleo``) is resolved to a puddle id.",
    ),
    Setting(
        "puddle.labels.url",
        Template(LABEL_TEMPLATE_VARIABLES),
        'Document naming the puddle a label points at; "" when labels are not supported.',
        "",
    ),
    Setting(
        "puddle.labels.pattern",
        Regex(groups=("id",)),
        "Extracts the puddle id from that document (searched line by line).",
        r"^(?P<id>\S+)\s*$",
    ),
    Section("undercloud", "What is installed, and the commands run in and on the image."),
    Setting(
        "undercloud.packages",
        ListOf(Text(PACKAGE_NAME, "package name")),
        "Packages installed into the image.",
        [],
    ),
    _commands(
        "undercloud.install_commands",
        "Shell commands run in the image chroot after the packages are installed.",
    ),
    _commands(
        "undercloud.boot_install_commands",
        "Shell commands run later, in the booted image (``openstack undercloud install`` "
        "needs running services).  May be empty.",
    ),
    _commands("undercloud.smoke_commands", "Shell commands that prove the undercloud works."),
    _commands("undercloud.update_commands", "Shell commands for a minor update."),
    _commands("undercloud.upgrade_commands", "Shell commands for a major upgrade."),
    Section(
        "provisioning",
        "The appliance's provisioning network: its second NIC, where it answers the "
        "baremetal nodes it inspects and deploys (``import --nodes`` links them to it).",
    ),
    Setting(
        "provisioning.interface",
        Text(r"[a-z][a-z0-9]{0,14}", "network interface name"),
        "The provisioning NIC in the appliance (the importer attaches it second: ``eth1``).",
        "eth1",
    ),
    Setting(
        "provisioning.address",
        Ipv4(interface=True),
        "The appliance's address and prefix on that NIC (TripleO's ``local_ip``).",
        "192.168.24.1/24",
    ),
    Setting(
        "provisioning.dhcp_start",
        Ipv4(),
        "First address handed to nodes.",
        "192.168.24.100",
        constraint=in_provisioning_network,
        constraint_doc="a host address in ``provisioning.address``'s network, not its own",
    ),
    Setting(
        "provisioning.dhcp_end",
        Ipv4(),
        "Last address handed to nodes.",
        "192.168.24.150",
        constraint=dhcp_range_ordered,
        constraint_doc="in that network, not before ``dhcp_start``, the range not holding "
        "the appliance's own address",
    ),
    Section(
        "ironic_images",
        "The deploy ramdisk (ironic-python-agent) and the whole-disk deploy image the "
        "builder makes with diskimage-builder and bakes into the appliance under "
        "``/srv/ironic/images``.",
    ),
    Setting(
        "ironic_images.agent_version",
        Text(r"(|[0-9]+(\.[0-9]+){1,3})", "release number, or empty"),
        "The ironic-python-agent release on PyPI the ramdisk runs: the one of the "
        "OpenStack series of the profile's Ironic.  Empty: no ramdisk, no deploy image.",
        "",
    ),
    Setting(
        "ironic_images.constraints",
        Text(NAME, "constraints name"),
        "The ``builders/constraints/upper-constraints-<name>.txt`` the agent is "
        "installed with (that series' openstack/requirements).",
        "2023.1",
        constraint=constraints_file_exists,
        constraint_doc="a file ``builders/constraints/upper-constraints-<value>.txt`` exists",
    ),
    Setting(
        "ironic_images.deploy_image_size_gib",
        Integer(1, 64),
        "Virtual size of the whole-disk deploy image (a node's disk must be at least this big).",
        2,
    ),
    Section("image", "The image file and the system in it."),
    Setting("image.format", Choice(("qcow2",)), "Image format.", "qcow2"),
    Setting(
        "image.compression",
        Choice(("zlib", "zstd", "none")),
        "qcow2 compression of the published image.",
        "zlib",
    ),
    Setting("image.size_gib", Integer(2, 2048), "Virtual disk size in GiB.", 8),
    Setting("image.hostname", Text(HOSTNAME, "hostname (RFC 1123)"), "Hostname.", "undercloud"),
    Setting("image.user", Text(POSIX_USER, "POSIX user name"), "The deploy user.", "stack"),
    Setting(
        "image.kernel_args",
        ListOf(Text(KERNEL_ARG, "kernel argument", "kernel argument")),
        "Kernel command line arguments (no spaces or shell characters).",
        [],
    ),
    Setting(
        "elements",
        ListOf(Text(NAME, "element name")),
        "Extra diskimage-builder elements; each must exist.",
        [],
    ),
    Setting(
        "environment",
        MapOf(Text(DIB_VARIABLE, "DIB_* variable name", "``DIB_*`` name"), Text(NO_NUL_TEXT)),
        "Extra environment for diskimage-builder (``DIB_RELEASE: 9-stream``).",
        {},
    ),
)
