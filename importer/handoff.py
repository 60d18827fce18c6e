"""Hand an imported appliance to the developer: ssh key, ssh.config, Ansible hosts.

``ssh -F ssh.config undercloud`` and ``ansible -i hosts undercloud`` work
from the directory the import ran in.  Both check the appliance's host key
against the ``known_hosts`` in its state directory (not
``~/.ssh/known_hosts``), which the importer wrote from the host keys it
made for the appliance (importer.host_keys): ``StrictHostKeyChecking yes``,
nothing is trusted on first use.

Virtual baremetal nodes (``import --nodes``) are in both files too, reached
through the appliance (``ProxyJump``): ``ssh -F ssh.config <node>`` works
once Ironic has deployed the node with the appliance user's key in its
config drive.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from undercloud_appliance.errors import ApplianceError, ChecksumError, NotFoundError, VirtError
from undercloud_appliance.manifest import write_file_atomically
from undercloud_appliance.retry_policies import poll_until

log = logging.getLogger(__name__)

SSH_CONFIG_NAME = "ssh.config"
INVENTORY_NAME = "hosts"
# The first line of every file the import writes into the handoff directory
# (``--handoff-dir``, default the current one; nodes.yaml's header says it
# too): what makes a file ours to replace.  A file without it is never
# overwritten: run as root in /etc, ``hosts`` would be /etc/hosts.
WRITTEN_BY = "written by undercloud-appliance import"
HANDOFF_HEADER = "# Written by undercloud-appliance import: the next import replaces this file.\n"
SSH_USER = "stack"
# Where the appliance keeps its clients' credentials, in SSH_USER's home.
APPLIANCE_CLOUDS_YAML = ".config/openstack/clouds.yaml"
# What ssh prints when the host key is unknown or not the pinned one.
HOST_KEY_REFUSED = "Host key verification failed"
# The deploy image's cloud-style first boot (glean) authorises the config
# drive's keys for root.
NODE_SSH_USER = "root"


def next_steps(name: str, ssh_hint: str, console_log: Path) -> list[str]:
    """What ``import`` prints last: reach the cloud, look at the appliance, update, remove.

    ``ssh_hint`` is the ``ssh -F ... NAME`` command.  The admin credentials
    are the appliance's own (made on its first boot, they never leave it).
    README.rst's "After import" shows the same lines.
    """
    return [
        "next steps:",
        f"  {ssh_hint}  # then: export OS_CLOUD=undercloud "
        f"(admin credentials: ~{SSH_USER}/{APPLIANCE_CLOUDS_YAML})",
        f"  undercloud-appliance status {name}  # console log: {console_log}",
        f"  undercloud-appliance update {name} --puddle latest "
        "[--puddle-dir DIR | --puddle-base URL]",
        f"  undercloud-appliance destroy {name}",
    ]


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: Path

    def public_text(self) -> str:
        return self.public.read_text().strip()


def given_ssh_key(path: Path) -> SshKey:
    """``--ssh-key``: a private key (with ``.pub`` beside it) or a ``.pub`` file."""
    path = Path(path).expanduser().resolve()
    if path.suffix == ".pub":
        public, private = path, path.with_suffix("")
    else:
        private, public = path, path.with_name(path.name + ".pub")
    for required in (private, public):
        if not required.is_file():
            raise NotFoundError(f"ssh key {required}: no such file")
    text = public.read_text(errors="replace").strip()
    if not text.startswith(("ssh-", "ecdsa-", "sk-")):
        raise ApplianceError(f"ssh key {public}: not an OpenSSH public key")
    return SshKey(private, public)


def generated_ssh_key(state_dir: Path) -> SshKey:
    """The appliance's own key pair, made once in its state directory."""
    private = state_dir / "id_ed25519"
    public = state_dir / "id_ed25519.pub"
    if not (private.is_file() and public.is_file()):
        private.unlink(missing_ok=True)
        public.unlink(missing_ok=True)
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "undercloud-appliance",
                "-f",
                str(private),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return SshKey(private, public)


@dataclass(frozen=True)
class SshEndpoint:
    name: str
    host: str
    port: int
    identity: Path
    known_hosts: Path


@dataclass(frozen=True)
class NodeEndpoint:
    """A virtual baremetal node: its name and fixed provisioning address."""

    name: str
    address: str


def _node_ssh_config(endpoint: SshEndpoint, node: NodeEndpoint) -> str:
    # Every deploy gives the node new host keys: remembering them would make
    # the next deploy of the same node look like an attack.  The node is on
    # the appliance's own provisioning network, reached only through it.
    return (
        f"Host {node.name}\n"
        f"    HostName {node.address}\n"
        f"    User {NODE_SSH_USER}\n"
        f"    ProxyJump {endpoint.name}\n"
        f"    IdentityFile {endpoint.identity}\n"
        "    IdentitiesOnly yes\n"
        "    StrictHostKeyChecking no\n"
        "    UserKnownHostsFile /dev/null\n"
        "    LogLevel ERROR\n"
    )


def ssh_config_text(endpoint: SshEndpoint, nodes: Sequence[NodeEndpoint] = ()) -> str:
    return (
        f"Host {endpoint.name}\n"
        f"    HostName {endpoint.host}\n"
        f"    Port {endpoint.port}\n"
        f"    User {SSH_USER}\n"
        f"    IdentityFile {endpoint.identity}\n"
        "    IdentitiesOnly yes\n"
        "    StrictHostKeyChecking yes\n"
        f"    UserKnownHostsFile {endpoint.known_hosts}\n"
        "    LogLevel ERROR\n"
    ) + "".join(f"\n{_node_ssh_config(endpoint, node)}" for node in nodes)


def inventory_text(
    endpoint: SshEndpoint, nodes: Sequence[NodeEndpoint] = (), ssh_config: Path | None = None
) -> str:
    common_args = f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={endpoint.known_hosts}"
    return (
        "[undercloud]\n"
        f"{endpoint.name} ansible_host={endpoint.host} ansible_port={endpoint.port} "
        f"ansible_user={SSH_USER} ansible_ssh_private_key_file={endpoint.identity} "
        f"ansible_ssh_common_args={shlex.quote(common_args)}\n"
    ) + _nodes_inventory(endpoint, nodes, ssh_config)


def _nodes_inventory(
    endpoint: SshEndpoint, nodes: Sequence[NodeEndpoint], ssh_config: Path | None
) -> str:
    if not nodes:
        return ""
    assert ssh_config is not None
    jump = f"ssh -F {ssh_config.absolute()} -W %h:%p {endpoint.name}"
    common_args = (
        f"-o ProxyCommand={shlex.quote(jump)} "
        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    )
    lines = [
        f"{node.name} ansible_host={node.address} ansible_user={NODE_SSH_USER} "
        f"ansible_ssh_private_key_file={endpoint.identity} "
        f"ansible_ssh_common_args={shlex.quote(common_args)}\n"
        for node in nodes
    ]
    return "\n[baremetal]\n" + "".join(lines)


def check_handoff_dir(directory: Path) -> Path:
    """``--handoff-dir``: an existing directory, made absolute (the files name each other)."""
    absolute = Path(directory).expanduser().absolute()
    if not absolute.is_dir():
        raise NotFoundError(f"--handoff-dir {directory}: no such directory")
    return absolute


def check_overwritable(path: Path, state_root: Path) -> None:
    """Refuse to replace ``path`` unless it is missing or undercloud-appliance wrote it.

    Ours: the header's words on the first line, or (written before the
    header existed) an ssh option naming a known_hosts in ``state_root``,
    the appliances' state directories, which no other tool writes about.
    """
    try:
        with path.open("rb") as handle:
            text = handle.read(64 * 1024).decode(errors="replace")
    except FileNotFoundError:
        return  # nothing there (or a dangling symlink, which the write replaces)
    except OSError as error:
        raise ApplianceError(
            f"{path}: cannot read it ({error.strerror}), so not overwriting it"
        ) from None
    first_line = text.partition("\n")[0]
    if first_line.startswith("#") and WRITTEN_BY in first_line.lower():
        return
    if any(f"UserKnownHostsFile{sep}{state_root}/" in text for sep in (" ", "=")):
        return
    raise ApplianceError(
        f"{path} exists and was not written by undercloud-appliance: not overwriting it "
        "(move it away, or import with --handoff-dir DIR)"
    )


def check_handoff_files(directory: Path, names: Sequence[str], state_root: Path) -> None:
    """Before an import changes anything: every file it will write may be written."""
    for name in names:
        check_overwritable(directory / name, state_root)


def write_handoff(
    endpoint: SshEndpoint, directory: Path, nodes: Sequence[NodeEndpoint] = ()
) -> tuple[Path, Path]:
    """Write ``ssh.config`` and ``hosts`` into ``directory``; return their paths."""
    ssh_config = directory / SSH_CONFIG_NAME
    inventory = directory / INVENTORY_NAME
    # The known_hosts is in the appliance's state directory, within the state root.
    state_root = endpoint.known_hosts.parent.parent
    check_handoff_files(directory, (SSH_CONFIG_NAME, INVENTORY_NAME), state_root)
    write_file_atomically(ssh_config, (HANDOFF_HEADER + ssh_config_text(endpoint, nodes)).encode())
    write_file_atomically(
        inventory, (HANDOFF_HEADER + inventory_text(endpoint, nodes, ssh_config)).encode()
    )
    return ssh_config, inventory


# Polling for a booting guest wants short attempts; a command for a guest that
# is up waits longer: under TCG on a busy host sshd can take seconds to greet.
POLL_CONNECT_TIMEOUT = 5
COMMAND_CONNECT_TIMEOUT = 30


def ssh_command(
    ssh_config: Path, name: str, *remote: str, connect_timeout: int = COMMAND_CONNECT_TIMEOUT
) -> list[str]:
    return [
        "ssh",
        "-F",
        str(ssh_config),
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        name,
        *remote,
    ]


def wait_for_ssh(
    ssh_config: Path, name: str, timeout: float, still_running: Callable[[], bool]
) -> None:
    """Retry ``ssh ... true`` until it works, the guest stops, or ``timeout`` passes."""

    def attempt() -> None:
        if not still_running():
            raise VirtError(f"domain {name!r} stopped while waiting for ssh")
        result = subprocess.run(
            ssh_command(ssh_config, name, "true", connect_timeout=POLL_CONNECT_TIMEOUT),
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            if HOST_KEY_REFUSED in result.stderr:
                # Not a guest still booting: its key is not the pinned one.  No retry.
                raise ChecksumError(
                    f"{name}: the appliance's ssh host key is not the one pinned in the "
                    f"known_hosts that {ssh_config} names: refusing to connect"
                )
            raise ConnectionError(result.stderr.strip().splitlines()[-1:] or "ssh failed")

    try:
        poll_until(timeout, (ConnectionError, subprocess.TimeoutExpired))(attempt)
    except (ConnectionError, subprocess.TimeoutExpired) as error:
        raise VirtError(f"{name}: ssh did not answer within {timeout:.0f}s ({error})") from None
