"""The ``build`` subcommand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builders.derived import DerivedBuildResult


def register_build_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build an appliance image from a release profile (or derive one from a build)",
        description="Run diskimage-builder with the project's elements and the profile's "
        "settings, then finish the disk with libguestfs.  Writes OUTPUT/undercloud.qcow2, "
        "OUTPUT/manifest.json and OUTPUT/build.log; OUTPUT appears only when complete.  "
        "With --from BUILD_DIR: a derived build, the parent's image updated offline to "
        "--puddle, then verified (booted, smoke-tested).",
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
    derived = parser.add_argument_group("derived builds (--from)")
    derived.add_argument(
        "--from",
        dest="parent",
        type=Path,
        metavar="BUILD_DIR",
        help="derive the build from this build of the same profile: its image updated "
        "offline to --puddle (which must not be older than the parent's)",
    )
    derived.add_argument(
        "--install",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="also install this package from the puddle (repeatable)",
    )
    derived.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not boot and smoke-test the derived build (then it records no smoke "
        "result and cannot be promoted without --force)",
    )
    derived.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--no-bake",
        dest="bake",
        action="store_false",
        help="skip booting the image for boot-time install and smoke commands; the manifest "
        "then records no smoke result",
    )
    parser.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    if args.parent is not None:
        return run_derived_build(args)
    if args.install or not args.verify or args.json:
        from undercloud_appliance.errors import ApplianceError

        raise ApplianceError("build: --install, --no-verify and --json apply to --from only")
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


def run_derived_build(args: argparse.Namespace) -> int:
    from builders.derived import derive_build
    from builders.profiles import load_profile
    from builders.verify import verify_build
    from undercloud_appliance.errors import ApplianceError

    if args.puddle is None:
        raise ApplianceError("build --from: give the --puddle ID|LABEL to derive the build with")
    if args.replace or not args.bake:
        raise ApplianceError("build --from: --replace and --no-bake apply to full builds only")
    profile = load_profile(args.profile)
    result = derive_build(
        args.parent,
        args.puddle,
        puddle_base=args.puddle_base,
        output_dir=args.output,
        install_packages=args.install,
        profile_name=profile.name,
        profile_family=profile.data["distro"]["family"],
    )
    smoke = verify_build(result.output_dir) if args.verify else None
    print(format_derived_result(result, smoke, args.json))
    return 0


def format_derived_result(
    result: DerivedBuildResult, smoke: dict[str, Any] | None, as_json: bool = False
) -> str:
    """What ``build --from`` prints: the new build, its parent, the verdict, the diff."""
    if as_json:
        return json.dumps(
            {
                "output_dir": str(result.output_dir),
                "build_id": result.build_id,
                "parent_build_id": result.manifest["updated_from"]["build_id"],
                "puddle_id": result.puddle_id,
                "previous_puddle_id": result.previous_puddle_id,
                "verified": None if smoke is None else smoke["passed"],
                "diff": result.diff.as_dict(),
            },
            indent=2,
        )
    verdict = "not verified (--no-verify)"
    if smoke is not None:
        passed = sum(entry["returncode"] == 0 for entry in smoke["results"])
        verdict = f"verified, smoke {passed}/{len(smoke['results'])} passed"
    return (
        f"derived build {result.build_id} in {result.output_dir}: puddle {result.puddle_id} "
        f"(parent {result.manifest['updated_from']['build_id']} on "
        f"{result.previous_puddle_id or 'no puddle'}); {verdict}\n{result.diff.as_text()}"
    ).rstrip("\n")
