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
    """Run ``step(context)`` functions in order, timing and logging each."""

    steps: Iterable[Callable[[ContextT], None]]
    timings: StepTimings = field(default_factory=StepTimings)

    def run(self, context: ContextT) -> StepTimings:
        for step in self.steps:
            name = step.__name__.removeprefix("step_").replace("_", "-")
            log.info("==> %s", name)
            started = time.monotonic()
            try:
                step(context)
            finally:
                elapsed = time.monotonic() - started
                self.timings.seconds[name] = elapsed
            log.info("<== %s (%.1fs)", name, elapsed)
        return self.timings
