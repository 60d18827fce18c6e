"""How the functional suite shares this host's two cores (pytest-xdist).

Most of the suite waits on emulated guests, each of which keeps one core
busy at a time.  ``tox -e functional`` runs two workers (``-n 2 --dist
loadscope --no-loadscope-reorder``), and this module decides what runs
where:

- **Scopes:** a test module is one unit of work (its module fixtures, such
  as an imported appliance, exist once), except the modules in
  ``SHARED_SCOPES``, which share a session fixture that is too slow to make
  twice: they form one unit, so one worker makes it.
- **Order:** the longest module first (``test_import``: the build, then the
  deploy walk-through on its virtual node), then the modules that do not
  need the session's appliance build (they run on the other worker while
  the build is made), then the ones that do, the P1 chain (nightly, the
  offline and online updates) first.

The build itself is made once per run however many workers ask for it
(``tests/conftest.py``, a lock in the run directory); libvirtd is started
by the first test that needs it and stopped by the last
(``tests/support/libvirtd.py``).
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

LONGEST_FIRST = ("test_import.py",)
# All start from the P1 appliance (``p1_offline_update``, a derived build).
SHARED_SCOPES = {
    "test_nightly.py": "p1-appliance",
    "test_offline_update.py": "p1-appliance",
    "test_online_update.py": "p1-appliance",
}
BUILD_FIXTURES = frozenset({"appliance_build", "p1_offline_update", "p1_build_dir"})


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or its shared scope."""
    module = nodeid.split("::", 1)[0]
    return SHARED_SCOPES.get(PurePosixPath(module).name, module)


def module_rank(module: str, needs_build: bool) -> tuple[int, int]:
    """Sort key of a unit of work: longest, without the build, shared scopes, the rest."""
    if module in LONGEST_FIRST:
        return (0, LONGEST_FIRST.index(module))
    if module in SHARED_SCOPES:
        return (2, 0)
    return (3, 0) if needs_build else (1, 0)


def order_items(items: list[pytest.Item]) -> None:
    """Reorder ``items`` in place, whole units of work at a time.

    A unit needs the build when any of its tests does (``BUILD_FIXTURES``
    among its fixtures).  Tests keep their order within a unit and units of
    one rank keep theirs (Python's sort is stable).
    """
    needs_build: dict[str, bool] = {}
    for item in items:
        scope = scope_of(item.nodeid)
        fixtures = getattr(item, "fixturenames", ())
        needs_build[scope] = needs_build.get(scope, False) or not BUILD_FIXTURES.isdisjoint(
            fixtures
        )

    def rank(item: pytest.Item) -> tuple[int, int]:
        scope = scope_of(item.nodeid)
        module = PurePosixPath(item.nodeid.split("::", 1)[0]).name
        return module_rank(module, needs_build[scope])

    items.sort(key=rank)


def make_scheduler(config: pytest.Config, log: object) -> object | None:
    """xdist's load-scope scheduler with ``scope_of`` as its scope; None: xdist's default."""
    if config.getoption("dist", None) != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return SharedScopeScheduling(config, log)
