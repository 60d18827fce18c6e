"""``undercloud-appliance verify``: boot a build, smoke-test it, record the verdict.

Two forms, one command:

- ``verify BUILD_DIR``: a build directory on this host
  (``builders.verify``); the verdict goes into its ``manifest.json``, which
  ``publish`` then carries to the store.
- ``verify --store URL --release R --build ID``: a build already published
  (say ``build --from --no-verify`` then ``publish``, or one published by
  another host).  It is fetched into the image cache like any import
  (checksums, and the signature with ``--trusted-key``), booted from there
  on a throwaway overlay, and the verdict is written beside it in the store
  (``VERIFICATION.json``: the published manifest is signed and never
  rewritten).  ``promote`` accepts a build whose record passed for its
  image's sha256 (``publish.promotion``).

The store form drives ``importer`` (fetch), ``builders`` (verify) and
``publish`` (the record), so it lives in the composition root.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from undercloud_appliance.errors import ApplianceError, BuildError
from undercloud_appliance.manifest import read_manifest
from undercloud_appliance.store_layout import IMAGE_NAME, MANIFEST_NAME

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """``verify BUILD_DIR`` and ``verify --store URL --release R --build ID``."""
    from builders.verify import DEFAULT_MEMORY_MIB

    verify = subparsers.add_parser(
        "verify",
        help="boot a build and run its smoke commands; record the verdict for promote",
        description="Boot the build's image on a throwaway overlay (the image is not "
        "touched) and run the smoke commands its manifest carries.  For BUILD_DIR the "
        "verdict becomes the manifest's smoke (stage verify); for a published build "
        "(--store, --release, --build) it is written beside the build in the store "
        "(VERIFICATION.json).  promote reads either.",
    )
    verify.add_argument("build_dir", metavar="BUILD_DIR", type=Path, nargs="?")
    verify.add_argument("--store", metavar="URL", help="store holding a published build")
    verify.add_argument("--release", help="the published build's release (with --store)")
    verify.add_argument(
        "--build", dest="build_id", metavar="ID", help="the published build's id (with --store)"
    )
    verify.add_argument(
        "--trusted-key",
        metavar="FPR",
        help="with --store: require SHA256SUMS.sig signed by this GPG key fingerprint "
        "(default: $UNDERCLOUD_APPLIANCE_TRUSTED_KEY)",
    )
    verify.add_argument(
        "--memory",
        type=int,
        default=DEFAULT_MEMORY_MIB,
        metavar="MIB",
        help=f"guest memory (default: {DEFAULT_MEMORY_MIB})",
    )
    verify.set_defaults(func=verify_command)


def verify_command(args: argparse.Namespace) -> int:
    from builders.verify import verify_build

    store_form = (args.store, args.release, args.build_id)
    if args.build_dir is not None:
        if any(store_form):
            raise ApplianceError("verify: give BUILD_DIR or --store/--release/--build, not both")
        smoke = verify_build(args.build_dir, args.memory)
        what = str(args.build_dir)
    else:
        if not all(store_form):
            raise ApplianceError("verify: give BUILD_DIR, or --store, --release and --build")
        smoke = verify_published(
            args.store, args.release, args.build_id, args.memory, args.trusted_key
        )
        what = f"{args.release}/{args.build_id}"
    passed = sum(result["returncode"] == 0 for result in smoke["results"])
    print(f"{what}: verified, smoke {passed}/{len(smoke['results'])} passed")
    return 0


def verify_published(
    store_url: str,
    release: str,
    build_id: str,
    memory_mib: int,
    trusted_key: str | None = None,
) -> dict[str, Any]:
    """Fetch, boot and smoke-test a published build; record the verdict in the store.

    A failed smoke test is recorded too, then raised (BuildError naming the command).
    """
    from builders.verify import smoke_failure, verify_build
    from importer.fetch import fetch_image
    from publish.promotion import record_verification
    from undercloud_appliance.stores import open_store

    fetched = fetch_image(store_url, release, build_id=build_id, trusted_key=trusted_key)
    with tempfile.TemporaryDirectory(prefix="verify-published-") as scratch:
        # A build directory for builders.verify: the cached image (read-only,
        # booted through an overlay) and a copy of the published manifest.
        build_dir = Path(scratch)
        (build_dir / IMAGE_NAME).symlink_to(fetched.image_path)
        (build_dir / MANIFEST_NAME).write_text(json.dumps(fetched.manifest))
        try:
            smoke = verify_build(build_dir, memory_mib)
        except BuildError:
            smoke = read_manifest(build_dir).get("smoke")
            if not smoke:
                raise  # it failed before any smoke command ran: nothing to record
    store = open_store(store_url)
    try:
        record_verification(store, release, build_id, smoke)
    finally:
        store.close()
    log.info("verdict recorded beside %s/%s in %s", release, build_id, store_url)
    failure = smoke_failure(smoke)
    if failure:
        raise BuildError(f"verify {release}/{build_id}: {failure}; recorded in the store")
    return smoke
