"""Take an appliance image's own secrets out of it: the published image holds none.

Each appliance makes its own on its first boot (elements/debian-undercloud's
undercloud-identity, the way DIB's runtime-ssh-host-keys makes host keys); a
build that kept its own would let anyone who can download the image read
them, and every copy accept the others' tokens.  What to take out is listed
by the element that makes the secrets, in the image (SEALED_SECRETS_LIST):

    remove GLOB   the files (or directories) are deleted
    blank GLOB    every password setting (INI "password = ...", YAML
                  "password: ...") in the files is emptied; the setting stays

The builder's seal applies it, and so does a derived build after its
update commands (undercloud-setup, say, makes passwords and keys again).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from undercloud_appliance.errors import ApplianceError

log = logging.getLogger(__name__)

SEALED_SECRETS_LIST = "/usr/share/undercloud-appliance/sealed-secrets"
PASSWORD_SETTING = re.compile(r"^(\s*password\s*[=:])[^\n]*$", re.MULTILINE)


class SealedSecretsError(ApplianceError):
    """The image's list of secrets is malformed."""


def seal_secrets(handle: Any) -> list[str]:
    """Apply SEALED_SECRETS_LIST on the OS mounted at ``/`` in libguestfs ``handle``.

    Returns the paths removed or blanked (an image without the list: none).
    """
    if not handle.is_file(SEALED_SECRETS_LIST):
        return []
    sealed = []
    for number, line in enumerate(handle.cat(SEALED_SECRETS_LIST).splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) != 2 or words[0] not in ("remove", "blank"):
            raise SealedSecretsError(
                f"{SEALED_SECRETS_LIST}:{number}: expected 'remove GLOB' or 'blank GLOB', "
                f"got {line.strip()!r}"
            )
        action, pattern = words
        for path in handle.glob_expand(pattern):
            if action == "remove":
                handle.rm_rf(path)
            elif handle.is_file(path, followsymlinks=False):
                handle.write(path, PASSWORD_SETTING.sub(r"\1", handle.cat(path)))
            else:
                continue
            sealed.append(path)
            log.debug("sealed secret: %s %s", action, path)
    return sealed
