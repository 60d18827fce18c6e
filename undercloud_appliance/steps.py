"""Timed steps: a build or import reads as a linear list of small steps.

Each step is logged when it starts and ends with its duration, and the
durations are collected so they can be written into a manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("undercloud_appliance")

ContextT = TypeVar("ContextT")


@dataclass
class StepTimings:
    """Seconds spent per step name, in the order the steps ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in self.seconds.items()}


@dataclass
class StepRunner(Generic[ContextT]):
    """Run ``step(context)`` functions in order, timing and logging each.

    ``finished(context)``, checked after each step, ends the run early (the
    work turned out to be done); ``prefix`` names what the steps are for in
    the log (one profile of several).  ``current`` is the step that ran
    last: the one that failed when ``run`` raises.
    """

    steps: Iterable[Callable[[ContextT], None]]
    timings: StepTimings = field(default_factory=StepTimings)
    finished: Callable[[ContextT], bool] | None = None
    prefix: str = ""
    current: str | None = None

    def run(self, context: ContextT) -> StepTimings:
        for step in self.steps:
            name = self.current = step.__name__.removeprefix("step_").replace("_", "-")
            log.info("==> %s%s", self.prefix, name)
            started = time.monotonic()
            try:
                step(context)
            finally:
                elapsed = time.monotonic() - started
                self.timings.seconds[name] = elapsed
            log.info("<== %s%s (%.1fs)", self.prefix, name, elapsed)
            if self.finished is not None and self.finished(context):
                break
        return self.timings
