"""The one wait-until helper: poll a check until it holds or time runs out.

Every "wait for X" in raylife (a port, Ray nodes, a job, Serve applications, a replica's version,
a baseline server) and in the tests is a `poll` or a `wait_until`, so timeouts, intervals and the
errors they end in behave the same everywhere.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

from raylife.errors import RaylifeError

T = TypeVar("T")


def poll(
    check: Callable[[], T | None],
    timeout_s: float,
    interval_s: float = 0.5,
    ignore: tuple[type[BaseException], ...] = (),
) -> T | None:
    """Call `check` every interval_s until it returns something truthy, and return that; None
    when timeout_s passes first. Exceptions of the `ignore` types count as "not yet"; any other
    exception ends the wait (a check raises when waiting longer is pointless: a process died)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(*ignore):
            result = check()
            if result:
                return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)


def wait_until(
    check: Callable[[], T | None],
    timeout_s: float,
    failure: str | Callable[[], str],
    interval_s: float = 0.5,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """`poll`, raising RaylifeError(failure) when time runs out; `failure` may be a function, to
    describe the state at the end (the last statuses, a log tail)."""
    result = poll(check, timeout_s, interval_s, ignore)
    if not result:
        raise RaylifeError(failure() if callable(failure) else failure)
    return result
