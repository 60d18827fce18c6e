"""Subcommands of this package (registered by undercloud_appliance.cli)."""

from __future__ import annotations

import argparse
import json


def _add_build_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store_url", metavar="STORE_URL", help="file://, http:// or https:// store")
    parser.add_argument("--release", required=True, help="release profile name, e.g. debian-zed")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--label", help="label to resolve to a build id (default: latest)")
    which.add_argument("--build", dest="build_id", metavar="ID", help="immutable build id")
    parser.add_argument(
        "--trusted-key",
        metavar="FPR",
        help="require SHA256SUMS.sig signed by this GPG key fingerprint "
        "(default: $UNDERCLOUD_APPLIANCE_TRUSTED_KEY)",
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
