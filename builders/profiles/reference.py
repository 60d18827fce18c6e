"""Generate ``docs/profile-settings.rst`` from the settings table.

Regenerate after changing ``settings.SETTINGS``::

    python -m builders.profiles.reference > docs/profile-settings.rst

A unit test fails while the committed file differs from the output.
"""

from __future__ import annotations

import json
import sys

from builders.profiles.settings import REQUIRED, SETTINGS, Section, Setting

TITLE = "Release profile settings"

INTRODUCTION = """\
.. This file is generated from builders/profiles/settings.py; do not edit.
   Regenerate: python -m builders.profiles.reference > docs/profile-settings.rst

A release profile is one YAML file per release in ``release-profiles/``
(``debian-zed.yaml`` is the release ``debian-zed``).  Files in
``release-profiles/bases/`` are shared bases, not buildable releases; they
are checked through the releases that extend them.  Set
``UNDERCLOUD_APPLIANCE_PROFILES`` (or pass ``profiles --profiles-dir DIR``)
to use another profiles directory.  A profile given as a path to a
``.yaml`` file still resolves ``extends`` in the profiles directory.

Inspect and check profiles with::

    undercloud-appliance profiles list
    undercloud-appliance profiles show debian-zed          # YAML, "# file:line" per value
    undercloud-appliance profiles show debian-zed --json   # {"profile": ..., "origins": ...}
    undercloud-appliance profiles validate                 # every release; or NAME / FILE.yaml

Inheritance
-----------

``extends: bases/debian`` names another file relative to
``release-profiles/``, without ``.yaml``.  The base is loaded first (and
its own base before it); then each file is merged over it:

* mappings merge key by key, recursively;
* lists append: the base's items first, then the child's;
* any other value (string, number, boolean) is replaced by the child's;
* a value tagged ``!replace`` replaces the base's value instead of being
  merged or appended::

      undercloud:
        packages: !replace [python3-openstackclient]   # drops the base's packages

A loop in ``extends`` or a missing file is an error naming the chain.
YAML anchors and aliases work within one file; merge keys (``<<``) and
other tags do not.

Provenance and errors
---------------------

Every resolved value remembers the ``file:line`` it came from
(``(default)`` for defaults, ``(file name)`` for ``name``).  A problem
with a profile is reported as one line naming that place, the setting and
the value, and the command exits with status 2::

    undercloud-appliance: error: release-profiles/foo.yaml:12: undercloud.packages[3]:
    'keystone; rm -rf /' is not a valid package name

(one line on the terminal; wrapped here).

Unknown settings, wrong types (quote numbers meant as text: ``release:
'17.1'``), values outside their choices and missing required settings are
errors.  ``profiles validate`` also checks that elements exist and that
every URL template renders.

Settings
--------
"""


def settings_reference() -> str:
    """The whole reStructuredText document."""
    out = [TITLE, "=" * len(TITLE), "", INTRODUCTION]
    for entry in SETTINGS:
        if isinstance(entry, Section):
            heading = f"``{entry.key}``"
            out += [heading, "~" * len(heading), "", entry.doc, ""]
        else:
            out += _setting(entry)
    return "\n".join(out).rstrip("\n") + "\n"


def _setting(setting: Setting) -> list[str]:
    facts = [setting.kind.describe()]
    if setting.derived:
        facts.append("derived")
    elif setting.default is REQUIRED:
        facts.append("required")
    else:
        facts.append(f"default ``{json.dumps(setting.default)}``")
    if setting.only_if is not None:
        key, value = setting.only_if
        facts.append(f"only when ``{key}`` is ``{value}``")
    lines = [f"``{setting.key}``", f"   {'; '.join(facts)}.", "", f"   {setting.doc}"]
    if setting.constraint_doc:
        lines.append(f"   {setting.constraint_doc}")
    return [*lines, ""]


if __name__ == "__main__":
    sys.stdout.write(settings_reference())
