"""Release profiles: one YAML file per release, with inheritance and provenance.

The public API (``builders.build`` uses it)::

    profile = load_profile("debian-zed")      # or a path to a .yaml file
    profile.name, profile.file, profile.data, profile.origins
    profile.get("puddle.base_url")
    list_profiles()                           # buildable release names
    validate_profile_statically(profile)      # + elements exist, templates render

``settings.SETTINGS`` is the one table of settings; ``docs/profile-settings.rst``
is generated from it (``python -m builders.profiles.reference``).
"""

from __future__ import annotations

from builders.profiles.loader import (
    PROFILES_DIR,
    PROFILES_DIR_ENV,
    Profile,
    list_profiles,
    load_profile,
    profiles_dir_default,
    validate_profile_statically,
)

__all__ = [
    "PROFILES_DIR",
    "PROFILES_DIR_ENV",
    "Profile",
    "list_profiles",
    "load_profile",
    "profiles_dir_default",
    "validate_profile_statically",
]
