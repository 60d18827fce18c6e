"""An imported appliance's state on this host: its name, state directory and record.

Each appliance has a state directory (``$UNDERCLOUD_APPLIANCE_STATE/<name>``
or ``~/.local/share/undercloud-appliance/appliances/<name>``) holding its
qcow2 overlay, key pair, host keys, ``known_hosts``, ``ssh.config``,
console log and ``import.json``, the record of what was imported and what
changed since.  ``status`` and
``destroy`` read and remove that state together with the libvirt domain.

Commands that change an appliance (import, update, upgrade, rollback,
destroy) hold its lock, ``appliance_lock``: a second one on the same name
fails at once, naming the command that holds it; other names are free.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from importer import libvirt_domain, virtual_bmc, virtual_nodes
from importer.host_keys import HOST_KEYS_DIR_NAME
from undercloud_appliance.errors import ApplianceError, NotFoundError, VirtError
from undercloud_appliance.manifest import write_file_atomically

STATE_ENV = "UNDERCLOUD_APPLIANCE_STATE"
RECORD_NAME = "import.json"
OVERLAY_NAME = "overlay.qcow2"
CONSOLE_LOG_NAME = "console.log"
KNOWN_HOSTS_NAME = "known_hosts"
KEY_FILES = ("id_ed25519", "id_ed25519.pub")
# What the state directory keeps across destroy and --replace: the client key
# pair and the appliance's host keys (see clear_state).
KEPT_NAMES = (*KEY_FILES, HOST_KEYS_DIR_NAME)
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


def appliances_dir() -> Path:
    configured = os.environ.get(STATE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return (base / "undercloud-appliance" / "appliances").resolve()


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ApplianceError(
            f"invalid appliance name {name!r}: use letters, digits, '.', '_' or '-'"
        )
    return name


def state_dir_for(name: str) -> Path:
    return appliances_dir() / check_name(name)


# -- one command at a time per appliance ------------------------------------------

# Beside the state directories, never in one: a failed import and destroy
# remove the state directory, and a lock on a removed file locks nothing.
# Appliance names cannot start with ".", so this is no appliance's directory.
LOCKS_DIR_NAME = ".locks"


class ApplianceBusy(ApplianceError):
    """Another command is changing the appliance."""


@contextlib.contextmanager
def appliance_lock(name: str, command: str) -> Iterator[None]:
    """Hold appliance ``name``'s lock while ``command`` runs; ApplianceBusy if it is held.

    Failing at once rather than waiting: an import or update takes minutes,
    and what the second command was asked to do may no longer make sense
    after the first.  The lock file says who holds it (command, pid, since).
    """
    path = appliances_dir() / LOCKS_DIR_NAME / f"{check_name(name)}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
    except OSError as error:
        raise ApplianceError(f"{path}: cannot lock appliance {name!r}: {error.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another command"
            raise ApplianceBusy(
                f"appliance {name!r} is busy: {holder} holds its lock ({path}); "
                "try again when it has finished"
            ) from None
        handle.truncate(0)
        handle.write(f"{command} (pid {os.getpid()}, since {datetime.now():%H:%M:%S})\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the import record ----------------------------------------------------------


def read_record(state_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((state_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(state_dir: Path, record: dict[str, Any]) -> None:
    """Replace the appliance's ``import.json`` atomically, readable by its owner only.

    It keeps the store URL as given (``upgrade`` reads the target release
    from the import's store), password included.
    """
    write_file_atomically(
        state_dir / RECORD_NAME, (json.dumps(record, indent=2) + "\n").encode(), mode=0o600
    )


def record_change(
    state_dir: Path,
    record: dict[str, Any],
    domain: Any,
    metadata: dict[str, str],
    *,
    release: str,
    puddle: str | None,
    history_entry: dict[str, Any],
) -> dict[str, str]:
    """Note an update, upgrade or rollback in ``import.json`` and the domain's metadata.

    Returns the domain metadata as written.
    """
    record["release"] = release
    record["puddle"] = puddle
    record.setdefault("changes", []).append(history_entry)
    write_record(state_dir, record)
    metadata = {**metadata, "release": release, "puddle": puddle or ""}
    libvirt_domain.write_metadata(domain, metadata)
    return metadata


# -- what is left in a state directory --------------------------------------------


def has_generated_key(state_dir: Path) -> bool:
    return all((state_dir / name).is_file() for name in KEY_FILES)


def has_appliance_state(state_dir: Path) -> bool:
    """Whether anything but the key pairs is left in the state directory."""
    return state_dir.is_dir() and any(p.name not in KEPT_NAMES for p in state_dir.iterdir())


def clear_state(state_dir: Path, keep_key: bool = True) -> None:
    """Remove overlay, record, console log, known_hosts...; keep the key pairs.

    Keeping the client key pair and the host keys lets the next import of
    this name reuse the customised layer in the cache (it holds both); that
    import writes known_hosts again from the same host keys.
    """
    if not state_dir.is_dir():
        return
    for path in state_dir.iterdir():
        if keep_key and path.name in KEPT_NAMES:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if not any(state_dir.iterdir()):
        state_dir.rmdir()


def remove_virtual_nodes(
    connection: Any, state_dir: Path, plan: virtual_nodes.NodesPlan | None = None
) -> list[str]:
    """Stop the BMC emulator, remove the virtual nodes and their network; say what went.

    ``plan``: the one an import is making (default: the one recorded in ``state_dir``).
    """
    removed = []
    if virtual_bmc.stop(state_dir):
        removed.append("BMC emulator")
    plan = plan or virtual_nodes.read_plan(state_dir)
    if plan is not None:
        removed += virtual_nodes.remove_nodes(connection, state_dir, plan)
    return removed


def teardown(connection: Any, domain: Any | None, state_dir: Path) -> list[str]:
    """Remove the appliance domain, its virtual nodes and its state; say what went."""
    removed = remove_virtual_nodes(connection, state_dir)
    if domain is not None:
        libvirt_domain.remove_domain(domain)
    clear_state(state_dir)
    return removed


# -- destroy and status ---------------------------------------------------------------


def destroy(name: str, uri: str) -> list[str]:
    """Remove the domain and its state (overlay, key); keep the image cache."""
    state_dir = state_dir_for(name)
    connection = libvirt_domain.connect(uri)
    domain = libvirt_domain.lookup(connection, name)
    if domain is not None and libvirt_domain.read_metadata(domain) is None:
        raise VirtError(
            f"libvirt domain {name!r} was not created by undercloud-appliance: not destroying it"
        )
    if domain is None and not has_appliance_state(state_dir):
        raise NotFoundError(f"no appliance named {name!r} (no libvirt domain, no {state_dir})")
    removed = []
    if domain is not None:
        removed.append(f"domain {name}")
    if has_appliance_state(state_dir):
        removed.append(f"{state_dir} (overlay and state; the key pairs stay)")
    return teardown(connection, domain, state_dir) + removed


def status(name: str, uri: str) -> dict[str, Any]:
    state_dir = state_dir_for(name)
    connection = libvirt_domain.connect(uri)
    domain = libvirt_domain.lookup(connection, name)
    record = read_record(state_dir)
    metadata = libvirt_domain.read_metadata(domain) if domain is not None else None
    if domain is not None and metadata is None:
        raise VirtError(f"libvirt domain {name!r} was not created by undercloud-appliance")
    if domain is None and not record:
        raise NotFoundError(f"no appliance named {name!r} (no libvirt domain, no {state_dir})")
    metadata = metadata or {}
    snapshots = libvirt_domain.list_snapshots(domain) if domain is not None else []
    plan = virtual_nodes.read_plan(state_dir)
    nodes = virtual_nodes.node_states(connection, plan) if plan is not None else []
    bmc_pid = virtual_bmc.running_pid(state_dir)
    return {
        "name": name,
        "state": libvirt_domain.state_name(domain),
        "build_id": metadata.get("build-id") or record.get("build_id"),
        "release": metadata.get("release") or record.get("release"),
        "puddle": metadata.get("puddle") or record.get("puddle"),
        "sha256": metadata.get("sha256") or record.get("sha256"),
        "address": metadata.get("address") or record.get("address"),
        "port": int(metadata.get("port") or record.get("port") or 22),
        "network": metadata.get("network") or record.get("network"),
        "overlay": record.get("overlay"),
        "image": record.get("image"),
        "state_dir": str(state_dir),
        "snapshots": [snapshot.as_dict() for snapshot in snapshots],
        "smoke": smoke_summary(record.get("smoke")),
        "nodes": nodes,
        "provisioning_link": plan.link if plan else None,
        "bmc": (
            {"port": plan.bmc_port, "running": bmc_pid is not None, "pid": bmc_pid}
            if plan
            else None
        ),
    }


def smoke_summary(results: Any) -> str | None:
    if not isinstance(results, list):
        return None
    passed = sum(1 for result in results if result.get("returncode") == 0)
    return f"{passed}/{len(results)} passed"
