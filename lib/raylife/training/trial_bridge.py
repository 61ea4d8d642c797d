"""A DDP sweep trial's reports, from its Ray Train run to Tune, without Ray's self-deadlock.

Ray's own bridge (`ray.tune.integration.ray_train.TuneReportCallback`, Ray 2.60) puts each Train
report into a queue of capacity 1 that the trial actor's MAIN thread drains, inside
`_TrainSession.get_next`, by calling `report()`, i.e. by putting into the session's result queue
(capacity 1) itself. When the function returns, the trial's training thread puts
`RESULT_DUPLICATE` into that same result queue. If the run's last report is still in the
inter-actor queue when `fit()` returns (the sweep's driver was slow to ask for the next result),
the main thread blocks on a full queue whose only consumer is itself: the trial hangs forever.

Here the report queue has ONE consumer, the trial's own training thread (the thread Tune runs the
function in): `fit()` runs in a helper thread, and the training thread forwards every report with
`ray.tune.report`, the public API a function trainable reports with. So every result reaches Tune's
result queue from the one thread that also reports `RESULT_DUPLICATE`, in order, and the function
returns only once Tune has taken the last of them. Why that ordering holds (pinned by
tests/unit/test_trial_bridge.py where it rests on Ray's code):
- Ray Train V2 calls `after_report` synchronously in the controller's poll of its workers, before
  it can find the run finished, so `fit()` returns only after every `put` below has returned;
- so when `fit()` has returned and the queue is empty, no report is left to forward.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.train import UserCallback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.util.queue import Empty, Queue

DRAIN_POLL_S = 0.5
"""How long the training thread waits for a report before it looks whether fit() has returned."""


class ForwardReports(UserCallback):
    """Ray Train callback (runs in the Train controller): rank 0's metrics of each report, with
    its checkpoint's path (Ray Train persisted it already), into the trial's queue. The put blocks
    while the trial has not taken the previous report, so workers never run ahead of Tune's
    scheduler (ASHA stops a trial at the rung it judged), as with Ray's own bridge."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        row = dict(metrics[0])
        if checkpoint is not None:
            row[CHECKPOINT_PATH_KEY] = checkpoint.path
        self.queue.put(row)


def fit_reporting_to_tune(build: Callable[[list[Any]], Any]) -> Any:
    """Build a trainer with the forwarding callback, run its fit() in a helper thread, and forward
    each report to Tune from this thread until fit() has returned and nothing is left; then return
    fit()'s result or raise its error."""
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = build([ForwardReports(queue)])
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # re-raised in the trial's thread below
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=fit, name="raylife-trial-fit", daemon=True).start()
    while True:
        # Read before the get: if fit() had returned then, every put had returned too.
        done = finished.is_set()
        try:
            row = queue.get(timeout=DRAIN_POLL_S)
        except Empty:
            if done:
                break
            continue
        tune.report(row)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
