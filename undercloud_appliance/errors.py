"""The project's own error type: what the CLI prints as one line."""

from __future__ import annotations


class ApplianceError(Exception):
    """A failure the user can act on.

    The CLI prints ``undercloud-appliance: error: <message>`` and exits with
    ``exit_code``; never a traceback.  Messages name the file, field or value
    that is wrong.
    """

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ProfileError(ApplianceError):
    """A release profile is missing, malformed or invalid."""

    exit_code = 2


class BuildError(ApplianceError):
    """An image build step failed."""

    exit_code = 3


class StoreError(ApplianceError):
    """A store could not be read or written."""

    exit_code = 4


class NotFoundError(ApplianceError):
    """A release, label, build or puddle does not exist."""

    exit_code = 5


class ChecksumError(ApplianceError):
    """Data does not match its published checksum or signature."""

    exit_code = 6


class UntrustedStoreData(ChecksumError):
    """A store sent what must not be used: larger than its limit, or over an
    https -> http redirect.  Refused like a checksum mismatch (exit 6)."""


class NetworkError(ApplianceError):
    """A remote endpoint could not be reached (after retries)."""

    exit_code = 7


class VirtError(ApplianceError):
    """libvirt or the guest did not do what was asked."""

    exit_code = 8
