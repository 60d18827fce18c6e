"""The ``build`` subcommand."""

from __future__ import annotations

import argparse
from pathlib import Path


def register_build_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build an appliance image from a release profile",
        description="Run diskimage-builder with the project's elements and the profile's "
        "settings, then finish the disk with libguestfs.  Writes OUTPUT/undercloud.qcow2, "
        "OUTPUT/manifest.json and OUTPUT/build.log; OUTPUT appears only when complete.",
    )
    parser.add_argument("profile", metavar="PROFILE", help="release profile name or YAML path")
    parser.add_argument(
        "--puddle",
        metavar="ID|LABEL",
        help="puddle to build from: an id, a label resolved and pinned now, or 'none' "
        "(default: the profile's puddle.default)",
    )
    parser.add_argument(
        "--puddle-base", metavar="URL", help="override the profile's puddle.base_url"
    )
    parser.add_argument(
        "--output", type=Path, metavar="DIR", help="build directory (default: ./builds/BUILD_ID)"
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="replace OUTPUT if it already exists, unless it holds an intact build of the "
        "same inputs (the manifest's input_digest): that one is kept and nothing is rebuilt",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="with --replace: build even when OUTPUT holds a build of the same inputs "
        "(e.g. for the distro mirror's newer packages, which the digest does not cover)",
    )
    parser.add_argument(
        "--no-bake",
        dest="bake",
        action="store_false",
        help="skip booting the image for boot-time install and smoke commands; the manifest "
        "then records no smoke result",
    )
    parser.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from builders.build import build

    output = build(
        args.profile,
        output=args.output,
        requested_puddle=args.puddle,
        puddle_base=args.puddle_base,
        replace=args.replace,
        bake=args.bake,
        rebuild=args.rebuild,
    )
    print(output)
    return 0
