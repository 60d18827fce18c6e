"""``undercloud-appliance nightly``: build, verify, publish and promote every release.

The release engineer's night, for each profile named (default: every
profile buildable on this host), independently of the others:

1. pin the puddle (the profile's default, or ``--puddle``): a label is
   resolved once and the id recorded;
2. find the build the store's label points at (the parent);
3. build: nothing to do when the parent was made from the same recipe
   (its manifest's ``recipe_digest``: the profile without its puddle, the
   elements, the builder's code, DIB) and puddle; a *derived* build (the
   parent's image plus the new puddle, ``builders.derived``) when only the
   puddle moved; else a *full* build
   (DIB, bake with its smoke test);
4. verify: a derived build is booted and smoke-tested (``builders.verify``);
   a full build's verdict is its bake's;
5. publish the build;
6. promote the label (the old target stays reachable as
   ``previous-<label>``);
7. prune the release to ``--keep`` builds (labelled builds are kept).

A profile that fails stops at that step, leaves its label where it was and
does not stop the others.  At the end: one table on the terminal, a JSON
report (``--report FILE``: per profile its build id, parent, puddles,
verdict, step times, image size and URL) and a non-zero exit naming each
failed profile and step.  This module is the composition root's, like the
rest of ``undercloud_appliance_cli``: it drives ``builders``, ``publish``
and ``importer`` through their public functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from undercloud_appliance.errors import ApplianceError, NotFoundError
from undercloud_appliance.manifest import MANIFEST_NAME, write_file_atomically
from undercloud_appliance.steps import StepRunner
from undercloud_appliance.store_layout import IMAGE_NAME

log = logging.getLogger(__name__)

DEFAULT_KEEP = 7
REPORT_FORMAT = 1


class NightlyError(ApplianceError):
    """One or more profiles failed; the others ran."""

    exit_code = 1


@dataclass
class ProfileRun:
    """One profile's night: what was built from what, and how it went."""

    profile: str
    status: str = "pending"  # passed, failed, skipped, unchanged
    kind: str | None = None  # full, derived
    build_id: str | None = None
    parent_build_id: str | None = None
    puddle_id: str | None = None
    parent_puddle_id: str | None = None
    verdict: str | None = None  # passed, failed, not run
    promoted: bool = False
    failed_step: str | None = None
    error: str | None = None
    reason: str | None = None
    image_size: int | None = None
    url: str | None = None
    step_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class NightlyOptions:
    store_url: str
    label: str
    keep: int
    work_dir: Path
    requested_puddle: str | None = None
    puddle_base: str | None = None
    sign_key: str | None = None
    trusted_key: str | None = None


@dataclass
class NightlyContext:
    """State shared by one profile's steps."""

    options: NightlyOptions
    run: ProfileRun
    profile: Any = None
    parent: Any = None  # importer.fetch.FetchedImage
    build_dir: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def step_pin_puddle(context: NightlyContext) -> None:
    from builders.profiles import load_profile
    from undercloud_appliance.puddles import resolve_puddle

    context.profile = load_profile(context.run.profile)
    settings = dict(context.profile.data["puddle"])
    if context.options.puddle_base:
        settings["base_url"] = context.options.puddle_base
    release = str(context.profile.data.get("release") or context.profile.name)
    context.run.puddle_id = resolve_puddle(settings, context.options.requested_puddle, release)


def step_find_parent(context: NightlyContext) -> None:
    """The build the label points at now, fetched (verified) into the cache."""
    from importer.fetch import fetch_image

    try:
        context.parent = fetch_image(
            context.options.store_url,
            context.profile.name,
            label=context.options.label,
            trusted_key=context.options.trusted_key,
        )
    except NotFoundError as error:
        if "no build labelled" not in str(error):
            raise
        if label_exists(context.options.store_url, context.profile.name, context.options.label):
            # A label whose build is gone is a broken store, not a first night:
            # no full build stands in for the parent it lost.
            raise NotFoundError(
                f"{context.options.label} of {context.profile.name} points at a build the "
                f"store no longer holds ({error})"
            ) from None
        log.info("%s: no build labelled %s yet", context.profile.name, context.options.label)
        return
    context.run.parent_build_id = context.parent.build_id
    context.run.parent_puddle_id = context.parent.manifest["puddle"].get("id")


def opened_store(store_url: str) -> contextlib.closing[Any]:
    """The store at ``store_url``, closed when the ``with`` block ends."""
    from undercloud_appliance.stores import open_store

    return contextlib.closing(open_store(store_url))


def label_exists(store_url: str, release: str, label: str) -> bool:
    """Whether the store lists ``label`` under ``release`` at all (even a dangling one)."""
    with opened_store(store_url) as store:
        try:
            return label in store.list_names(release)
        except NotFoundError:
            return False


def choose_kind(context: NightlyContext) -> str:
    """unchanged, derived or full (see the module docstring)."""
    from builders.build import recipe_digest_of

    if context.parent is None:
        return "full"
    # The profile without its puddle, our elements, the builder's code, DIB's
    # version and the Ironic images' inputs (builders/input_digest.py).
    parent_recipe = context.parent.manifest.get("recipe_digest")
    if parent_recipe is None or parent_recipe != recipe_digest_of(context.profile):
        log.info(
            "%s: build %s was made from another recipe (%s): a full build",
            context.profile.name,
            context.run.parent_build_id,
            parent_recipe or "not recorded",
        )
        return "full"
    if context.parent.manifest["puddle"].get("id") == context.run.puddle_id:
        return "unchanged"
    return "derived" if context.run.puddle_id else "full"


def step_build(context: NightlyContext) -> None:
    kind = choose_kind(context)
    context.run.kind = None if kind == "unchanged" else kind
    output = context.options.work_dir / context.profile.name
    if kind == "unchanged":
        context.run.status = "unchanged"
        context.run.reason = (
            f"{context.options.label} is build {context.run.parent_build_id}, made from this "
            f"profile and puddle {context.run.puddle_id or 'none'}"
        )
        return
    if kind == "derived":
        context.build_dir = derive_from_parent(context, output)
    else:
        from builders.build import build

        context.build_dir = build(
            context.profile.name,
            output=output / "full",
            requested_puddle=context.run.puddle_id or "none",
            puddle_base=context.options.puddle_base,
            replace=True,
        )
    context.manifest = json.loads((context.build_dir / MANIFEST_NAME).read_text())
    context.run.build_id = context.manifest["build_id"]
    context.run.image_size = context.manifest["image"]["file_size"]


def step_verify(context: NightlyContext) -> None:
    """A derived build is booted and smoke-tested now; a full build was in its bake."""
    if context.build_dir is None:
        return
    if context.run.kind == "derived":
        from builders.verify import verify_build

        try:
            verify_build(context.build_dir)
        finally:
            context.manifest = json.loads((context.build_dir / MANIFEST_NAME).read_text())
            smoke = context.manifest.get("smoke")
            context.run.verdict = "failed" if not smoke or not smoke["passed"] else "passed"
        return
    smoke = context.manifest.get("smoke")
    context.run.verdict = "passed" if smoke and smoke.get("passed") is True else "failed"
    if context.run.verdict != "passed":
        raise ApplianceError(f"build {context.run.build_id}: its smoke test did not pass")


def derive_from_parent(context: NightlyContext, output: Path) -> Path:
    """The parent's cached image plus the pinned puddle (verified in the next step)."""
    import shutil

    from builders.derived import derive_build

    parent = context.parent
    parent_dir = output / "parent"
    shutil.rmtree(output, ignore_errors=True)
    parent_dir.mkdir(parents=True)
    (parent_dir / IMAGE_NAME).symlink_to(parent.image_path)
    (parent_dir / MANIFEST_NAME).write_bytes(parent.manifest_path.read_bytes())
    result = derive_build(
        parent_dir,
        str(context.run.puddle_id),
        puddle_base=context.options.puddle_base,
        output_dir=output / "derived",
        profile_name=context.profile.name,
        profile_family=context.profile.data["distro"]["family"],
    )
    return result.output_dir


def step_publish(context: NightlyContext) -> None:
    if context.build_dir is None:
        return
    from publish.publishing import publish_build
    from undercloud_appliance.store_layout import build_path

    with opened_store(context.options.store_url) as store:
        publish_build(context.build_dir, store, context.options.sign_key, show_progress=False)
        context.run.url = store.where(build_path(context.profile.name, context.run.build_id))


def step_promote(context: NightlyContext) -> None:
    if context.build_dir is None:
        return
    from publish.promotion import promote

    with opened_store(context.options.store_url) as store:
        promote(store, context.profile.name, context.run.build_id, context.options.label)
    context.run.promoted = True


def step_prune(context: NightlyContext) -> None:
    from publish.retention import prune

    with opened_store(context.options.store_url) as store:
        prune(store, context.profile.name, context.options.keep)


PROFILE_STEPS: tuple[Callable[[NightlyContext], None], ...] = (
    step_pin_puddle,
    step_find_parent,
    step_build,
    step_verify,
    step_publish,
    step_promote,
    step_prune,
)


def run_profile(name: str, options: NightlyOptions) -> ProfileRun:
    """One profile's steps; a failure is recorded in the run, not raised."""
    context = NightlyContext(options, ProfileRun(name))
    runner: StepRunner[NightlyContext] = StepRunner(
        PROFILE_STEPS, finished=lambda c: c.run.status == "unchanged", prefix=f"{name}: "
    )
    try:
        runner.run(context)
    except Exception as error:
        # A defect (not an ApplianceError) too: the other profiles and the report go on.
        context.run.status, context.run.failed_step = "failed", runner.current
        context.run.error = (
            str(error)
            if isinstance(error, ApplianceError)
            else f"internal error: {type(error).__name__}: {error}"
        )
        log.error("%s: %s failed: %s", name, runner.current, context.run.error)
    else:
        if context.run.status != "unchanged":
            context.run.status = "passed"
    finally:
        context.run.step_seconds = {
            step: round(seconds, 1) for step, seconds in runner.timings.seconds.items()
        }
    return context.run


def run_nightly(
    profiles: Sequence[str],
    options: NightlyOptions,
    not_buildable: Callable[[str], str | None],
) -> list[ProfileRun]:
    """Every profile in turn; ``not_buildable(name)`` gives the reason to skip one."""
    runs = []
    for name in profiles:
        reason = not_buildable(name)
        if reason is not None:
            runs.append(ProfileRun(name, status="skipped", reason=reason))
            continue
        runs.append(run_profile(name, options))
    return runs


def reason_not_buildable(name: str, options: NightlyOptions) -> str | None:
    """Why this host cannot build ``name`` (``profiles matrix``' reason), or None.

    A profile that does not load is not skipped: it fails, at pin-puddle.
    """
    from builders.build_host import NotBuildableHere, check_buildable_here
    from builders.profiles import load_profile

    try:
        check_buildable_here(
            load_profile(name),
            requested_puddle=options.requested_puddle,
            puddle_base=options.puddle_base,
        )
    except NotBuildableHere as refusal:
        return refusal.reason
    except ApplianceError:
        return None
    return None


def summary_table(runs: Sequence[ProfileRun]) -> str:
    """The terminal summary: one row per profile."""
    header = ("profile", "status", "kind", "build", "parent", "puddle", "verdict", "time")
    rows = [header]
    for run in runs:
        rows.append(
            (
                run.profile,
                run.status + (f" ({run.failed_step})" if run.failed_step else ""),
                run.kind or "-",
                run.build_id or "-",
                run.parent_build_id or "-",
                run.puddle_id or "-",
                run.verdict or "-",
                f"{sum(run.step_seconds.values()):.0f} s",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]  # fmt: skip
    for run in runs:
        if run.error or run.reason:
            lines.append(f"{run.profile}: {run.error or run.reason}")
    return "\n".join(line.rstrip() for line in lines)


def write_report(path: Path, runs: Sequence[ProfileRun], options: NightlyOptions) -> None:
    report = {
        "format": REPORT_FORMAT,
        "store": options.store_url,
        "label": options.label,
        "profiles": [asdict(run) for run in runs],
    }
    write_file_atomically(path, (json.dumps(report, indent=2) + "\n").encode())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "nightly",
        help="build, verify, publish and promote each release profile",
        description="For each profile (default: every one buildable here): a derived build "
        "from the label's build when only the puddle moved, else a full build; publish it; "
        "promote the label only when its smoke test passed (keeping previous-LABEL); prune. "
        "A failed profile leaves its label alone and does not stop the others; the exit "
        "status is non-zero if any failed.",
    )
    parser.add_argument("profiles", nargs="*", metavar="PROFILE", help="release profiles")
    parser.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get("UNDERCLOUD_APPLIANCE_STORE"),
        help="store to publish to (default: $UNDERCLOUD_APPLIANCE_STORE, else the default store)",
    )
    parser.add_argument("--label", default="latest", help="label to promote (default: latest)")
    parser.add_argument(
        "--keep",
        type=int,
        default=DEFAULT_KEEP,
        metavar="N",
        help=f"builds to keep per release (default: {DEFAULT_KEEP}; labelled builds are kept)",
    )
    parser.add_argument(
        "--puddle", metavar="ID|LABEL", help="puddle for every profile (default: its own)"
    )
    parser.add_argument("--puddle-base", metavar="URL", help="override puddle.base_url")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("nightly"),
        metavar="DIR",
        help="where builds are made (default: ./nightly)",
    )
    parser.add_argument("--report", type=Path, metavar="FILE", help="write the JSON report here")
    parser.add_argument("--sign-key", metavar="KEYID", help="sign what is published")
    parser.add_argument(
        "--trusted-key", metavar="FPR", help="key the parent builds must be signed by"
    )
    parser.set_defaults(func=nightly_command)


def nightly_command(args: argparse.Namespace) -> int:
    from builders.profiles import list_profiles
    from undercloud_appliance.stores import default_store_url

    if args.keep < 1:
        raise ApplianceError(f"--keep {args.keep}: keep at least the promoted build")
    options = NightlyOptions(
        store_url=args.store or default_store_url(),
        label=args.label,
        keep=args.keep,
        work_dir=args.work_dir.absolute(),
        requested_puddle=args.puddle,
        puddle_base=args.puddle_base,
        sign_key=args.sign_key,
        trusted_key=args.trusted_key,
    )
    profiles = args.profiles or list_profiles()
    runs = run_nightly(profiles, options, lambda name: reason_not_buildable(name, options))
    print(summary_table(runs))
    if args.report:
        write_report(args.report, runs, options)
    failed = [run for run in runs if run.status == "failed"]
    if failed:
        raise NightlyError(
            "nightly: " + "; ".join(f"{run.profile} failed at {run.failed_step}" for run in failed)
        )
    return 0
