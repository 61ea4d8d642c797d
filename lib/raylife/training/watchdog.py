"""Nothing hangs silently: a run's pace, the bound it derives, and the watch that acts past it.

A training run, a sweep trial or a batch job that stops making progress (a hung collective, a
frozen process, a deadlock inside a library) would otherwise hold its CPUs until a person notices
or a RayJob's deadline fails the whole job hours later. Each of them beats a `Pace` when it
makes progress (a training step, an epoch, a report; a trial's result; a batch written); the bound
is several times the slowest gap between beats so far (start-up, to the first beat, excluded),
never below a floor that covers start-up.
Past the bound, the owner of the run stops it in the way its runtime retries:

- a Ray Train worker or a one-process trial exits its process (train.py), so Ray Train restarts
  the worker group from the latest checkpoint, or Tune restarts the trial, under `max_failures`;
- a sweep's driver kills a trial's actor that stopped sending results (tune.TrialWatchdog), so
  Tune marks it failed (or retries it) and the sweep goes on.

No Ray here: unit tests drive a Pace with their own clock.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from raylife.config import StallPolicy

STALLED_EXIT_CODE = 75
"""Exit status of a process its watch ended (EX_TEMPFAIL: worth retrying)."""


class Pace:
    """Progress beats of one run, and whether it is overdue. Beats are cheap (a float store), so
    a loop can beat every step; one reader thread and one writer need no lock."""

    def __init__(self, policy: StallPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy, self.clock = policy, clock
        self.started = self.last = clock()
        self.slowest = 0.0
        self.beats = 0

    def beat(self) -> None:
        now = self.clock()
        if self.beats:  # start-up (to the first beat) is the floor's to cover, not a pace
            self.slowest = max(self.slowest, now - self.last)
        self.last = now
        self.beats += 1

    def resume(self) -> None:
        """Work starts again after an idle wait (an actor given its next chunk): the wait is
        neither a gap of the pace nor counted towards a stall."""
        self.last = self.clock()

    def bound_s(self) -> float:
        return self.policy.bound_s(self.slowest)

    def stalled_s(self) -> float | None:
        """Seconds since the last beat when past the bound, else None."""
        idle = self.clock() - self.last
        return idle if self.policy.enabled and idle > self.bound_s() else None

    def describe(self, idle_s: float) -> str:
        """Why the bound is what it is, for the one line that reports a stall."""
        bound = self.bound_s()
        why = (
            f"{self.policy.factor:g} x its slowest gap {self.slowest:.1f} s"
            if bound > self.policy.floor_s
            else f"the floor; slowest gap so far {self.slowest:.1f} s over {self.beats} beats"
        )
        return f"no progress for {idle_s:.0f} s (bound {bound:.0f} s: {why})"


class Watch:
    """A daemon thread that calls on_stall(line) once when its Pace is overdue, then ends."""

    def __init__(
        self,
        pace: Pace,
        name: str,
        on_stall: Callable[[str], None],
        poll_s: float = 1.0,
    ) -> None:
        self.pace, self.name, self.on_stall, self.poll_s = pace, name, on_stall, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"raylife-watch-{name}", daemon=True)

    def __enter__(self) -> Watch:
        if self.pace.policy.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            idle = self.pace.stalled_s()
            if idle is not None and not self._stop.is_set():
                self.on_stall(f"raylife watchdog: {self.name}: {self.pace.describe(idle)}")
                return


class Beating:
    """An iterable of batches that beats a Pace as each batch is drawn (the previous step is
    done); `sampler` and len() pass through, as the epoch loop uses them."""

    def __init__(self, batches: Any, pace: Pace) -> None:
        self.batches, self.pace = batches, pace
        self.sampler = getattr(batches, "sampler", None)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            self.pace.beat()
            yield batch

    def __len__(self) -> int:
        return len(self.batches)


def exit_stalled(line: str) -> None:
    """A stalled worker ends its own process: its stuck thread cannot be interrupted (a hung
    collective, a blocked read), and a dead worker is what its runtime already restarts under its
    failure policy: Ray Train's worker group (or Tune's one-process trial) from the latest
    checkpoint, Ray Data's actor pool with the chunk retried."""
    print(
        f"{line}; ending the process so its runtime retries the work", file=sys.stderr, flush=True
    )
    os._exit(STALLED_EXIT_CODE)
