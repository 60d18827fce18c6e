"""The project's retry policies: every retry in the tree is one of these.

Two shapes cover everything that retries:

- ``transient_failures``: a call that may fail for a moment (a store or
  mirror restarting, a dropped connection) is tried a few times with
  exponential backoff, and the last error is raised unchanged.
- ``poll_until``: something that becomes true later (a guest's address,
  ssh answering) is asked at a fixed interval until a deadline.

Each returns a ``tenacity.Retrying``; call it with the function and its
arguments (``policy(function, *args)``) or iterate it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import tenacity

log = logging.getLogger("undercloud_appliance")

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


def transient_failures(
    retry_on: ExceptionTypes,
    attempts: int,
    *,
    max_wait: float = 8.0,
    budget_seconds: float | None = None,
    what: str | None = None,
    describe: Callable[[BaseException | None], str] = str,
) -> tenacity.Retrying:
    """Up to ``attempts`` tries, backing off 0.25 s, 0.5 s, ... up to ``max_wait``.

    ``budget_seconds`` also stops once that much time has passed.  When
    ``what`` is given each retry is logged as ``WHAT failed (REASON),
    retrying``, the reason made by ``describe`` (which must leave
    credentials out).
    """
    stop = tenacity.stop_after_attempt(attempts)
    if budget_seconds is not None:
        stop = stop | tenacity.stop_after_delay(budget_seconds)
    before_sleep = None
    if what is not None:

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.info("%s failed (%s), retrying", what, describe(error))

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        stop=stop,
        wait=tenacity.wait_exponential(multiplier=0.25, max=max_wait),
        before_sleep=before_sleep,
        reraise=True,
    )


def poll_until(
    timeout: float,
    retry_on: ExceptionTypes,
    *,
    interval: float = 1.0,
) -> tenacity.Retrying:
    """Try every ``interval`` seconds while ``retry_on`` is raised, for ``timeout`` seconds.

    The last error is raised unchanged once the deadline has passed.
    """
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(interval),
        reraise=True,
    )
