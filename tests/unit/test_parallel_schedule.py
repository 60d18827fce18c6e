"""The functional suite's split over two workers (tests/support/parallel_schedule.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.parallel_schedule import order_items, scope_of


@dataclass
class FakeItem:
    nodeid: str
    fixturenames: tuple[str, ...] = ()


def test_update_modules_share_one_scope_and_others_are_their_module() -> None:
    offline = "tests/functional/test_offline_update.py::test_a"
    online = "tests/functional/test_online_update.py::test_b[x]"
    assert scope_of(offline) == scope_of(online)
    assert scope_of("tests/functional/test_fetch.py::test_c[y::z]") == (
        "tests/functional/test_fetch.py"
    )


def test_import_first_then_modules_without_the_build_then_the_update_chain() -> None:
    items = [
        FakeItem("tests/functional/test_build.py::test_manifest", ("appliance_build",)),
        FakeItem("tests/functional/test_build.py::test_failing_install"),
        FakeItem("tests/functional/test_fetch.py::test_one"),
        FakeItem("tests/functional/test_fetch.py::test_three"),
        FakeItem("tests/functional/test_import.py::test_import", ("appliance_build",)),
        FakeItem("tests/functional/test_offline_update.py::test_p1", ("p1_offline_update",)),
        FakeItem("tests/functional/test_online_update.py::test_walk", ("p1_offline_update",)),
        FakeItem("tests/functional/test_store_trust.py::test_two"),
    ]
    order_items(items)  # type: ignore[arg-type]
    assert [item.nodeid.split("/")[-1] for item in items] == [
        "test_import.py::test_import",
        # Without the build, in their collection order.
        "test_fetch.py::test_one",
        "test_fetch.py::test_three",
        "test_store_trust.py::test_two",
        "test_offline_update.py::test_p1",
        "test_online_update.py::test_walk",
        # A module with one test that needs the build waits for it as a whole.
        "test_build.py::test_manifest",
        "test_build.py::test_failing_install",
    ]
