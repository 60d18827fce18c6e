"""The timed step runner every build, import, update and nightly run reads as."""

from __future__ import annotations

import pytest

from undercloud_appliance.steps import StepRunner


def step_first(ran: list[str]) -> None:
    ran.append("first")


def step_second_one(ran: list[str]) -> None:
    ran.append("second")


def step_breaks(ran: list[str]) -> None:
    raise RuntimeError("broken")


def test_steps_run_in_order_and_each_is_timed() -> None:
    ran: list[str] = []
    timings = StepRunner([step_first, step_second_one]).run(ran)
    assert ran == ["first", "second"]
    assert list(timings.seconds) == ["first", "second-one"]


def test_a_failing_step_is_current_and_timed_and_the_rest_do_not_run() -> None:
    ran: list[str] = []
    runner: StepRunner[list[str]] = StepRunner([step_first, step_breaks, step_second_one])
    with pytest.raises(RuntimeError):
        runner.run(ran)
    assert (ran, runner.current, list(runner.timings.seconds)) == (
        ["first"],
        "breaks",
        ["first", "breaks"],
    )


def test_finished_ends_the_run_after_the_step_that_finished_it() -> None:
    ran: list[str] = []
    runner: StepRunner[list[str]] = StepRunner(
        [step_first, step_second_one, step_first], finished=lambda r: "second" in r
    )
    runner.run(ran)
    assert ran == ["first", "second"]
