"""``undercloud-appliance``: one command line, three packages behind it.

This package is the composition root, the only code that imports
``builders``, ``publish`` and ``importer`` together: it asks each to register
its subcommands and turns the project's errors into one line on stderr and a
non-zero exit code.  Every error line and log message passes through
``redact_urls_in_text``: a store or puddle URL's password never reaches the
terminal or a CI log, whichever module wrote the message.  This package lives
outside ``undercloud_appliance`` (the shared contracts) so that the
contracts import nothing above them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from undercloud_appliance import __version__
from undercloud_appliance.errors import ApplianceError
from undercloud_appliance.stores.credentials import redact_urls_in_text

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
    from undercloud_appliance_cli import nightly, verify

    for package_cli in (builders_cli, publish_cli, importer_cli):
        package_cli.register(subparsers)
    verify.register(subparsers)  # its store form drives all three packages
    nightly.register(subparsers)  # drives all three packages: the composition root's own
    return parser


class RedactingFormatter(logging.Formatter):
    """Log lines without URL passwords (tracebacks with --debug included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls_in_text(super().format(record))


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler])


def print_error(text: str) -> None:
    print(redact_urls_in_text(f"{PROG}: {text}"), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        result = args.func(args)
    except ApplianceError as error:
        print_error(f"error: {error}")
        return error.exit_code
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except Exception as error:  # the user gets one line, not a traceback
        if args.debug:
            print(redact_urls_in_text(traceback.format_exc()), end="", file=sys.stderr)
        print_error(
            f"internal error: {type(error).__name__}: {error} (run with --debug for a traceback)"
        )
        return 70
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
