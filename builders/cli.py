"""Subcommands of this package (registered by undercloud_appliance_cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builders.build_command import register_build_command
from builders.build_matrix import columns_help
from undercloud_appliance.errors import ProfileError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the main parser."""
    register_profile_commands(subparsers)
    register_build_command(subparsers)


def register_profile_commands(subparsers: argparse._SubParsersAction) -> None:
    """``profiles list|show|validate|matrix``."""
    profiles = subparsers.add_parser(
        "profiles",
        help="list, show and validate release profiles",
        description="Release profiles live in release-profiles/ "
        "(or $UNDERCLOUD_APPLIANCE_PROFILES); see docs/profile-settings.rst.",
    )
    profiles.add_argument(
        "--profiles-dir",
        type=Path,
        metavar="DIR",
        help="release profiles directory (default: $UNDERCLOUD_APPLIANCE_PROFILES "
        "or the repository's release-profiles/)",
    )
    actions = profiles.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list",
        help="names of the buildable release profiles",
        description="Print the release profile names, one a line; with --json, the build "
        "matrix's rows (see 'profiles matrix --help').",
    )
    listing.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of objects, one per profile, with the fields of "
        "'profiles matrix' (this probes the profiles' mirrors)",
    )
    listing.set_defaults(func=list_command)

    matrix = actions.add_parser(
        "matrix",
        help="the build matrix for CI: each profile, its family, release, puddle, store "
        "and whether this host can build it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One row per release profile.  'buildable' is what 'build' decides\n"
        "before it writes anything (builders/build_host.py): the profile is valid, the\n"
        "servers the build downloads from answer this host and a base image DIB cannot\n"
        "download is here.  Run it where the builds run.\n\n"
        "Text: a table.  --json: one line,\n"
        '  {"include": [{"profile": "debian-zed", ...}, ...]}\n'
        "the shape GitHub Actions' strategy.matrix takes as is (fromJSON).  Each row's\n"
        "fields (profiles list --json prints the rows as a JSON list):\n" + columns_help(),
    )
    matrix.add_argument(
        "--json", action="store_true", help='print {"include": [ROW, ...]} on one line'
    )
    matrix.add_argument(
        "--buildable-only",
        action="store_true",
        help="leave out the profiles this host cannot build",
    )
    matrix.set_defaults(func=matrix_command)

    show = actions.add_parser(
        "show", help="print a resolved profile with the file:line of each value"
    )
    show.add_argument("profile", metavar="NAME", help="release name or path to a .yaml file")
    show.add_argument(
        "--json",
        action="store_true",
        help='print {"profile": ..., "origins": {"dotted.key": "file:line"}}',
    )
    show.set_defaults(func=show_command)

    validate = actions.add_parser(
        "validate",
        help="check profiles (schema, elements, templates); one line per profile",
    )
    validate.add_argument(
        "profiles",
        nargs="*",
        metavar="NAME",
        help="release names or .yaml paths (default: every release profile)",
    )
    validate.set_defaults(func=validate_command)


def list_command(args: argparse.Namespace) -> int:
    if args.json:
        from builders.build_matrix import matrix_rows, rows_as_json_list

        print(rows_as_json_list(matrix_rows(args.profiles_dir)))
        return 0
    from builders.profiles import list_profiles

    for name in list_profiles(args.profiles_dir):
        print(name)
    return 0


def matrix_command(args: argparse.Namespace) -> int:
    from builders.build_matrix import matrix_rows, rows_as_matrix_json, rows_as_table

    rows = matrix_rows(args.profiles_dir, buildable_only=args.buildable_only)
    sys.stdout.write(rows_as_matrix_json(rows) + "\n" if args.json else rows_as_table(rows))
    return 0


def show_command(args: argparse.Namespace) -> int:
    from builders.profiles import load_profile
    from builders.profiles.show import profile_as_json, profile_as_yaml

    profile = load_profile(args.profile, args.profiles_dir)
    sys.stdout.write(profile_as_json(profile) + "\n" if args.json else profile_as_yaml(profile))
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """Print ``ok NAME`` or ``error NAME: <problem>`` per profile; fail if any failed."""
    from builders.profiles import list_profiles, load_profile, validate_profile_statically
    from undercloud_appliance.stores.credentials import redact_urls_in_text

    names = args.profiles or list_profiles(args.profiles_dir)
    if not names:
        raise ProfileError("no release profiles to validate")
    failed = []
    for name in names:
        try:
            validate_profile_statically(load_profile(name, args.profiles_dir))
        except ProfileError as error:
            failed.append(name)
            # On stdout, so not through the command line's error line: redact here.
            print(f"error {name}: {redact_urls_in_text(str(error))}", flush=True)
        else:
            print(f"ok    {name}", flush=True)
    if failed:
        raise ProfileError(f"{len(failed)} of {len(names)} profiles invalid: {', '.join(failed)}")
    return 0
