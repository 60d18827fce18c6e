"""The store layout: the contract between ``publish`` and ``importer``.

Documented in ``docs/store-layout.rst``::

    <store>/<release>/<build-id>/undercloud.qcow2
    <store>/<release>/<build-id>/undercloud.qcow2.sha256   "<hex>  undercloud.qcow2"
    <store>/<release>/<build-id>/undercloud.qcow2.md5      "<hex>  undercloud.qcow2"
    <store>/<release>/<build-id>/manifest.json
    <store>/<release>/<build-id>/SHA256SUMS                names only, sha256sum -c; lists
                                                           the image, manifest.json, BUILD_ID
    <store>/<release>/<build-id>/SHA256SUMS.sig            optional detached GPG signature
    <store>/<release>/<build-id>/BUILD_ID                  the build id, one line
    <store>/<release>/<build-id>/PROMOTIONS.json           forced promotions (not signed)
    <store>/<release>/<build-id>/VERIFICATION.json         ``verify --store``'s verdict
                                                           (not signed; names the image's
                                                           sha256)
    <store>/<release>/<label>/...                          the same files as the build
                                                           the label points at

``<release>`` is the release profile's name (``debian-zed``).  Build ids
start with a digit (``20261122T041800Z-1a2b3c``); labels start with a
letter, so the two never collide.  A build directory is complete or absent:
files are written under temporary names and renamed last.
"""

from __future__ import annotations

import re

from undercloud_appliance.errors import ApplianceError

IMAGE_NAME = "undercloud.qcow2"
SHA256_NAME = f"{IMAGE_NAME}.sha256"
MD5_NAME = f"{IMAGE_NAME}.md5"
MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"
SIGNATURE_NAME = "SHA256SUMS.sig"
BUILD_ID_NAME = "BUILD_ID"
PROMOTIONS_NAME = "PROMOTIONS.json"
VERIFICATION_NAME = "VERIFICATION.json"

#: What SHA256SUMS (and so its signature) vouches for: everything the
#: importer trusts.  Builds published before it listed manifest.json and
#: BUILD_ID are fetched without a trusted key only.
SIGNED_NAMES = (IMAGE_NAME, MANIFEST_NAME, BUILD_ID_NAME)

#: The most a reader takes of each small file: a store that serves more is
#: refused before this host's memory or disk fills.  The image's own limit
#: is the size its manifest states.
SMALL_FILE_LIMITS = {
    BUILD_ID_NAME: 256,
    SHA256_NAME: 4 * 1024,
    MD5_NAME: 4 * 1024,
    SUMS_NAME: 64 * 1024,
    SIGNATURE_NAME: 64 * 1024,
    MANIFEST_NAME: 1024 * 1024,
    PROMOTIONS_NAME: 1024 * 1024,
    VERIFICATION_NAME: 1024 * 1024,
}

RELEASE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
BUILD_ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
LABEL_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def check_release(name: str) -> str:
    if not RELEASE_PATTERN.fullmatch(name) or ".." in name:
        raise ApplianceError(
            f"invalid release name {name!r}: use lower-case letters, digits, '.', '_' or '-'"
        )
    return name


def check_build_id(build_id: str) -> str:
    if not BUILD_ID_PATTERN.fullmatch(build_id):
        raise ApplianceError(f"invalid build id {build_id!r}: expected YYYYMMDDTHHMMSSZ-xxxxxx")
    return build_id


def check_label(label: str) -> str:
    if not LABEL_PATTERN.fullmatch(label):
        raise ApplianceError(
            f"invalid label {label!r}: a label starts with a letter and holds only "
            "lower-case letters, digits, '_' or '-' (no '/' or '..')"
        )
    return label


def build_path(release: str, build_id: str) -> str:
    """Store-relative path of a build directory."""
    return f"{check_release(release)}/{check_build_id(build_id)}"


def label_path(release: str, label: str) -> str:
    """Store-relative path of a label."""
    return f"{check_release(release)}/{check_label(label)}"


def build_files() -> tuple[str, ...]:
    """Files every published build directory holds (signature is optional)."""
    return (IMAGE_NAME, SHA256_NAME, MD5_NAME, MANIFEST_NAME, SUMS_NAME, BUILD_ID_NAME)
