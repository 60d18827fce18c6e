"""``undercloud-appliance``: one command line, three packages behind it.

This package is the composition root, the only code that imports
``builders``, ``publish`` and ``importer`` together: it asks each to register
its subcommands and turns the project's errors into one line on stderr and a
non-zero exit code.  It lives outside ``undercloud_appliance`` (the shared
contracts) so that the contracts import nothing above them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from undercloud_appliance import __version__
from undercloud_appliance.errors import ApplianceError

PROG = "undercloud-appliance"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build, publish and import pre-installed undercloud appliances.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument(
        "--debug", action="store_true", help="show a traceback for unexpected errors"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # Each package owns its subcommands; imports of heavy bindings (guestfs,
    # libvirt) happen inside the command functions, not here.
    from builders import cli as builders_cli
    from importer import cli as importer_cli
    from publish import cli as publish_cli

    for package_cli in (builders_cli, publish_cli, importer_cli):
        package_cli.register(subparsers)
    return parser


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname).1s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        result = args.func(args)
    except ApplianceError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the user gets one line, not a traceback
        if args.debug:
            traceback.print_exc()
        print(
            f"{PROG}: internal error: {type(error).__name__}: {error} "
            "(run with --debug for a traceback)",
            file=sys.stderr,
        )
        return 70
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
