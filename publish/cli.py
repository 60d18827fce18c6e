"""Subcommands of this package (registered by undercloud_appliance_cli):
``publish``, ``promote``, ``prune`` and ``list``.  See docs/publishing.rst."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

STORE_HELP = (
    "store URL: file:///path, http(s)://host/path (WebDAV) or ssh://[user@]host[:port]/path "
    "(default: $UNDERCLOUD_APPLIANCE_STORE or file://~/.local/share/undercloud-appliance/store)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the main parser."""
    publish = subparsers.add_parser(
        "publish",
        help="upload a build directory to a store, with checksums",
        description="Upload BUILD_DIR (undercloud.qcow2, manifest.json) to "
        "<store>/<release>/<build-id>/ with SHA256SUMS, .sha256, .md5 and BUILD_ID.",
    )
    publish.add_argument("build_dir", type=Path, metavar="BUILD_DIR")
    publish.add_argument("--store", metavar="URL", help=STORE_HELP)
    publish.add_argument(
        "--sign-key", metavar="KEYID", help="sign SHA256SUMS with this GPG key (SHA256SUMS.sig)"
    )
    publish.set_defaults(func=run_publish)

    promote = subparsers.add_parser(
        "promote",
        help="point a label (e.g. latest) at a verified build",
        description="Re-verify BUILD_ID on the store and move RELEASE/LABEL to it, keeping "
        "the old target as previous-LABEL.",
    )
    promote.add_argument("release", metavar="RELEASE")
    promote.add_argument("build_id", metavar="BUILD_ID")
    promote.add_argument("--label", required=True, metavar="NAME")
    promote.add_argument("--store", metavar="URL", help=STORE_HELP)
    promote.add_argument(
        "--force",
        action="store_true",
        help="promote even though the build has no passing smoke test "
        "(logged and recorded in the build's PROMOTIONS.json)",
    )
    promote.set_defaults(func=run_promote)

    prune = subparsers.add_parser(
        "prune",
        help="delete old builds of a release (never labelled ones)",
    )
    prune.add_argument("release", metavar="RELEASE")
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="newest builds to keep")
    prune.add_argument("--store", metavar="URL", help=STORE_HELP)
    prune.set_defaults(func=run_prune)

    listing = subparsers.add_parser("list", help="show builds, labels, sizes and puddle ids")
    listing.add_argument("release", nargs="?", metavar="RELEASE")
    listing.add_argument("--store", metavar="URL", help=STORE_HELP)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)


def run_publish(args: argparse.Namespace) -> int:
    from publish.publishing import publish_build
    from undercloud_appliance.stores import open_store

    store = open_store(args.store)
    try:
        context, timings = publish_build(
            args.build_dir, store, sign_key=args.sign_key, show_progress=not args.quiet
        )
    finally:
        store.close()
    log.info("step timings: %s", timings.as_dict())
    # The build's place in the store, whether published now or already there.
    print(context.where)
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from publish.promotion import promote
    from undercloud_appliance.stores import open_store

    store = open_store(args.store)
    try:
        previous = promote(store, args.release, args.build_id, args.label, force=args.force)
    finally:
        store.close()
    if previous == args.build_id:
        print(f"{args.release}/{args.label} -> {args.build_id} (already: nothing changed)")
    else:
        print(f"{args.release}/{args.label} -> {args.build_id} (previous: {previous or 'none'})")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from publish.retention import prune
    from undercloud_appliance.stores import open_store

    store = open_store(args.store)
    try:
        result = prune(store, args.release, args.keep)
    finally:
        store.close()
    for build_id in result.deleted:
        print(f"deleted {args.release}/{build_id}")
    print(f"kept {len(result.kept)} build(s), deleted {len(result.deleted)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from publish.listing import format_listing, list_store
    from undercloud_appliance.stores import open_store

    store = open_store(args.store)
    try:
        releases = list_store(store, args.release)
    finally:
        store.close()
    if args.json:
        json.dump({"store": store.display_url, "releases": releases}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_listing(releases))
    return 0
