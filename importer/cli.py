"""Subcommands of this package (registered by undercloud_appliance_cli)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importer.imports import ImportOptions
    from importer.updates.online import OnlineUpdateResult


def _add_build_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "store_url", metavar="STORE_URL", help="file://, http(s):// or ssh:// store"
    )
    parser.add_argument("--release", required=True, help="release profile name, e.g. debian-zed")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--label", help="label to resolve to a build id (default: latest)")
    which.add_argument("--build", dest="build_id", metavar="ID", help="immutable build id")
    _add_trusted_key(parser)


def _add_trusted_key(parser: argparse.ArgumentParser, otherwise: str = "") -> None:
    parser.add_argument(
        "--trusted-key",
        metavar="FPR",
        help="require SHA256SUMS.sig signed by this GPG key fingerprint, covering the "
        "image, manifest.json and BUILD_ID (default: $UNDERCLOUD_APPLIANCE_TRUSTED_KEY"
        f"{otherwise})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the main parser."""
    fetch = subparsers.add_parser(
        "fetch",
        help="download, verify and cache an appliance image",
        description="Resolve a build in a store, download its image (resuming an "
        "interrupted download), verify its sha256 and keep it in the content-addressed "
        "cache ($UNDERCLOUD_APPLIANCE_CACHE or ~/.cache/undercloud-appliance/images).",
    )
    _add_build_selection(fetch)
    fetch.add_argument(
        "--print-path", action="store_true", help="print only the verified cached image path"
    )
    fetch.set_defaults(func=run_fetch)
    register_appliance_commands(subparsers)


def run_fetch(args: argparse.Namespace) -> int:
    from importer.fetch import fetch_image
    from importer.signature import configured_fingerprint

    fetched = fetch_image(
        args.store_url,
        args.release,
        label=args.label,
        build_id=args.build_id,
        trusted_key=configured_fingerprint(args.trusted_key),
    )
    if args.print_path:
        print(fetched.image_path)
        return 0
    print(
        json.dumps(
            {
                "release": fetched.release,
                "build_id": fetched.build_id,
                "puddle": fetched.puddle_id,
                "sha256": fetched.sha256,
                "path": str(fetched.image_path),
                "manifest": str(fetched.manifest_path),
                "transferred_bytes": fetched.transferred_bytes,
                "resumed_from": fetched.resumed_from,
                "from_cache": fetched.from_cache,
            },
            indent=2,
        )
    )
    return 0


DEFAULT_URI = "qemu:///system"


def _add_connect(parser: argparse.ArgumentParser) -> None:
    # virsh's own variable: the walk-throughs run unchanged against another libvirtd.
    parser.add_argument(
        "--connect",
        default=os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI,
        metavar="URI",
        help=f"libvirt URI (default: $LIBVIRT_DEFAULT_URI, else {DEFAULT_URI})",
    )


def register_appliance_commands(subparsers: argparse._SubParsersAction) -> None:
    importer = subparsers.add_parser(
        "import",
        help="fetch an appliance and boot it under libvirt",
        description="Fetch (or reuse from the cache) a build, boot it from a qcow2 overlay "
        "under libvirt and write ssh.config and an Ansible 'hosts' inventory into the "
        "current directory (or --handoff-dir).",
    )
    importer.add_argument("--name", default="undercloud", help="domain and ssh host name")
    _add_build_selection(importer)
    importer.add_argument("--memory", type=int, default=8192, metavar="MiB")
    importer.add_argument("--vcpus", type=int, default=4, metavar="N")
    importer.add_argument(
        "--disk-size", type=int, metavar="G", help="grow the root disk to G GiB (never shrinks)"
    )
    importer.add_argument(
        "--ssh-key",
        metavar="FILE",
        help="private key (FILE.pub beside it) or public key to authorise for stack and root "
        "(default: a key pair made in the appliance's state directory)",
    )
    _add_connect(importer)
    importer.add_argument(
        "--network",
        choices=("default", "user"),
        default="default",
        help="libvirt's 'default' NAT network, or qemu user networking with ssh "
        "forwarded to a port on 127.0.0.1",
    )
    importer.add_argument(
        "--replace", action="store_true", help="tear down an existing appliance of this name"
    )
    importer.add_argument(
        "--handoff-dir",
        type=Path,
        metavar="DIR",
        help="write ssh.config, hosts (and nodes.yaml) into DIR (default: the current "
        "directory); a file there that undercloud-appliance did not write is never overwritten",
    )
    importer.add_argument(
        "--boot-timeout", type=float, default=600, metavar="SECONDS", help="wait for ssh this long"
    )
    importer.add_argument(
        "--skip-smoke",
        action="store_true",
        help="do not run the profile's smoke commands after a fresh import",
    )
    importer.add_argument(
        "--nodes",
        type=int,
        default=0,
        metavar="N",
        help="also make N virtual baremetal nodes (powered off, network boot) on a "
        "provisioning link to the appliance's eth1, a Redfish BMC emulator for them, and "
        "nodes.yaml for 'openstack baremetal create'",
    )
    importer.add_argument(
        "--provisioning-link",
        choices=("auto", "network", "udp"),
        default="auto",
        help="isolated libvirt network (any number of nodes), or a UDP socket pair on "
        "127.0.0.1 (one node, no bridge needed); auto: the network when libvirt can make it",
    )
    importer.add_argument(
        "--bmc-port",
        type=int,
        metavar="PORT",
        help="port of the nodes' BMC emulator (default: a free one)",
    )
    importer.add_argument(
        "--qemu-user",
        choices=("libvirt", "importer"),
        default="libvirt",
        help="libvirt: qemu runs as libvirt's unprivileged qemu user (libvirt-qemu), "
        "let into the cache and state directories by ACL entries; importer: qemu runs as "
        "the importing user (root when root imports), nothing is relabelled",
    )
    importer.set_defaults(func=run_import)

    destroy = subparsers.add_parser(
        "destroy",
        help="remove an imported appliance (domain and overlay; the cache stays)",
    )
    destroy.add_argument("name", metavar="NAME")
    _add_connect(destroy)
    destroy.set_defaults(func=run_destroy)

    status = subparsers.add_parser("status", help="show an imported appliance")
    status.add_argument("name", metavar="NAME")
    _add_connect(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=run_status)

    register_update_commands(subparsers)


def register_update_commands(subparsers: argparse._SubParsersAction) -> None:
    update = subparsers.add_parser(
        "update",
        help="apply a puddle to a running appliance in place",
        description="Pin the puddle, snapshot the appliance, switch its repositories, "
        "upgrade its packages, run the profile's update and smoke commands; on any failure "
        "revert to the snapshot. A new build from a build and a newer puddle is "
        "'build PROFILE --from BUILD_DIR --puddle ID'.",
    )
    # NAME is optional to argparse only so that --offline gets its own message.
    update.add_argument("name", metavar="NAME", nargs="?", help="imported appliance")
    update.add_argument("--puddle", required=True, metavar="ID|LABEL", help="puddle to apply")
    update.add_argument(
        "--puddle-base", metavar="URL", help="puddle base URL (default: the build's)"
    )
    update.add_argument("--json", action="store_true", help="print the result as JSON")
    # Moved to builders (where builds are made): a clear word instead of "unrecognized".
    update.add_argument("--offline", metavar="BUILD_DIR", help=argparse.SUPPRESS)
    _add_puddle_dir(update)
    _add_trusted_key(update, otherwise=", else the key the appliance was imported with")
    _add_connect(update)
    update.set_defaults(func=run_update)

    upgrade = subparsers.add_parser(
        "upgrade",
        help="major upgrade of a running appliance to another release",
        description="Like update, with the target release's published manifest: its "
        "puddle repositories, upgrade commands and smoke commands.",
    )
    upgrade.add_argument("name", metavar="NAME")
    upgrade.add_argument("--to-release", required=True, metavar="RELEASE")
    upgrade.add_argument(
        "--store", metavar="URL", help="store holding the target release (default: the import's)"
    )
    upgrade.add_argument("--label", help="target build label in the store (default: latest)")
    upgrade.add_argument(
        "--puddle", default="latest", metavar="ID|LABEL", help="target puddle (default: latest)"
    )
    upgrade.add_argument("--puddle-base", metavar="URL", help="puddle base URL override")
    _add_puddle_dir(upgrade)
    _add_trusted_key(upgrade, otherwise=", else the key the appliance was imported with")
    upgrade.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_connect(upgrade)
    upgrade.set_defaults(func=run_upgrade)

    rollback = subparsers.add_parser(
        "rollback", help="revert an appliance to its newest (or a named) update snapshot"
    )
    rollback.add_argument("name", metavar="NAME")
    rollback.add_argument("--snapshot", metavar="SNAPSHOT", help="snapshot name (see status)")
    _add_connect(rollback)
    rollback.set_defaults(func=run_rollback)


def _add_puddle_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--puddle-dir",
        metavar="DIR",
        type=Path,
        help="a local puddle tree (what --puddle-base would point at), served where the "
        "appliance reaches this host for the length of the update",
    )


def _check_puddle_source(args: argparse.Namespace) -> None:
    from undercloud_appliance.errors import ApplianceError

    if args.puddle_dir is not None and args.puddle_base is not None:
        raise ApplianceError("give --puddle-dir DIR or --puddle-base URL, not both")


def run_update(args: argparse.Namespace) -> int:
    from undercloud_appliance.errors import ApplianceError

    if args.offline is not None:
        raise ApplianceError(
            "update --offline moved to builders: 'undercloud-appliance build PROFILE "
            f"--from {args.offline} --puddle {args.puddle}'"
        )
    if args.name is None:
        raise ApplianceError("update: give the NAME of an imported appliance")
    _check_puddle_source(args)
    from importer.appliance_state import appliance_lock, check_name
    from importer.signature import configured_fingerprint
    from importer.updates.online import update_online

    with appliance_lock(check_name(args.name), "update"):
        result = update_online(
            args.name,
            args.puddle,
            args.connect,
            puddle_base=args.puddle_base,
            trusted_key=configured_fingerprint(args.trusted_key),
            puddle_dir=args.puddle_dir,
        )
    print(format_online_result(result, args.json))
    return 0


def run_upgrade(args: argparse.Namespace) -> int:
    from importer.appliance_state import appliance_lock, check_name
    from importer.signature import configured_fingerprint
    from importer.updates.online import upgrade_online
    from undercloud_appliance.store_layout import check_release

    check_release(args.to_release)
    _check_puddle_source(args)
    with appliance_lock(check_name(args.name), "upgrade"):
        result = upgrade_online(
            args.name,
            args.to_release,
            args.connect,
            requested_puddle=args.puddle,
            store_url=args.store,
            label=args.label,
            puddle_base=args.puddle_base,
            trusted_key=configured_fingerprint(args.trusted_key),
            puddle_dir=args.puddle_dir,
        )
    print(format_online_result(result, args.json))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from importer.appliance_state import appliance_lock
    from importer.updates.rollback import rollback

    with appliance_lock(args.name, "rollback"):
        chosen = rollback(args.name, args.connect, args.snapshot)
    print(
        f"{args.name}: rolled back to snapshot {chosen.name} "
        f"(release {chosen.release}, puddle {chosen.puddle or 'none'})"
    )
    return 0


def format_online_result(result: OnlineUpdateResult, as_json: bool = False) -> str:
    """What ``update NAME`` and ``upgrade NAME`` print: the change and the version diff."""
    if as_json:
        return json.dumps(
            {
                "name": result.name,
                "kind": result.kind,
                "release": result.release,
                "puddle_id": result.puddle_id,
                "previous_puddle_id": result.previous_puddle_id,
                "snapshot": result.snapshot,
                "diff": result.diff.as_dict(),
                "smoke": result.smoke,
                "timings": result.timings,
            },
            indent=2,
        )
    verb = "upgraded to " + result.release if result.kind == "upgrade" else "updated"
    return (
        f"{result.name}: {verb} to puddle {result.puddle_id} "
        f"(from {result.previous_puddle_id or 'no puddle'}; snapshot {result.snapshot}; "
        f"smoke {sum(r['returncode'] == 0 for r in result.smoke)}/{len(result.smoke)} passed)\n"
        f"{result.diff.as_text()}"
    ).rstrip("\n")


def _positive(value: int | None, option: str) -> None:
    from undercloud_appliance.errors import ApplianceError

    if value is not None and value <= 0:
        raise ApplianceError(f"{option} {value}: must be a positive number")


def run_import(args: argparse.Namespace) -> int:
    from importer.appliance_state import appliance_lock, check_name
    from importer.handoff import check_handoff_dir
    from importer.imports import ImportOptions
    from importer.signature import configured_fingerprint
    from undercloud_appliance.errors import ApplianceError

    check_name(args.name)
    _positive(args.memory, "--memory")
    _positive(args.vcpus, "--vcpus")
    _positive(args.disk_size, "--disk-size")
    _positive(args.bmc_port, "--bmc-port")
    if args.nodes < 0:
        raise ApplianceError(f"--nodes {args.nodes}: must be 0 or more")
    options = ImportOptions(
        name=args.name,
        store_url=args.store_url,
        release=args.release,
        label=args.label,
        build_id=args.build_id,
        memory_mib=args.memory,
        vcpus=args.vcpus,
        disk_size_gib=args.disk_size,
        ssh_key=Path(args.ssh_key) if args.ssh_key else None,
        uri=args.connect,
        network=args.network,
        replace=args.replace,
        trusted_key=configured_fingerprint(args.trusted_key),
        handoff_dir=check_handoff_dir(args.handoff_dir or Path.cwd()),
        boot_timeout=args.boot_timeout,
        nodes=args.nodes,
        provisioning_link=args.provisioning_link,
        bmc_port=args.bmc_port,
        qemu_user=args.qemu_user,
    )
    with appliance_lock(args.name, "import"):
        return _import_and_smoke_test(options, smoke=not args.skip_smoke)


def _import_and_smoke_test(options: ImportOptions, smoke: bool) -> int:
    from importer.appliance_state import CONSOLE_LOG_NAME, state_dir_for
    from importer.handoff import next_steps
    from importer.imports import GUEST_BOOT_STEPS
    from importer.imports import run_import as import_appliance

    result = import_appliance(options)
    record = result.record
    verb = "already imported" if result.already_imported else "imported"
    print(
        f"{result.name}: {verb} build {record['build_id']} of {record['release']} "
        f"at {record['address']}:{record['port']} "
        f"(ours {record['our_seconds']:.1f}s, guest boot {record['guest_boot_seconds']:.1f}s: "
        f"{' + '.join(GUEST_BOOT_STEPS)})"
    )
    print(f"wrote {result.ssh_config} and {result.inventory}")
    if record.get("nodes"):
        nodes = record["nodes"]
        print(
            f"{nodes['count']} virtual node(s) on a {nodes['link']} provisioning link, "
            f"BMC emulator at {nodes['bmc']}; wrote {nodes['nodes_file']} "
            "(in the appliance too: openstack baremetal create nodes.yaml)"
        )
    failure = None
    if smoke and not result.already_imported:
        from importer.imports import smoke_test_import

        failure = smoke_test_import(result)
    console_log = state_dir_for(result.name) / CONSOLE_LOG_NAME
    print("\n".join(next_steps(result.name, result.ssh_hint, console_log)))
    if failure:
        from importer.smoke import SmokeError

        # The appliance is imported and running; the undercloud in it fails.
        raise SmokeError(f"{result.name}: imported and running, but {failure}")
    return 0


def run_destroy(args: argparse.Namespace) -> int:
    from importer.appliance_state import appliance_lock, destroy

    with appliance_lock(args.name, "destroy"):
        removed = destroy(args.name, args.connect)
    for what in removed:
        print(f"removed {what}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from importer.appliance_state import status

    report = status(args.name, args.connect)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if key in ("snapshots", "nodes", "bmc"):
            continue
        print(f"{key + ':':<10} {value if value not in (None, '') else '-'}")
    if report["bmc"]:
        bmc = report["bmc"]
        running = f"running, pid {bmc['pid']}" if bmc["running"] else "not running"
        print(f"{'bmc:':<10} port {bmc['port']} ({running})")
    for node in report["nodes"]:
        print(f"{'node:':<10} {node['name']} {node['mac']} {node['state']}")
    for snapshot in report["snapshots"]:
        print(
            f"snapshot:  {snapshot['name']} (release {snapshot['release']}, puddle "
            f"{snapshot['puddle'] or 'none'}): {snapshot['reason']}"
        )
    return 0
