"""Nothing hangs silently, on the real local cluster: the DDP trial's end that deadlocked Ray's own
report bridge, forced; a frozen trial stopped by the sweep's watchdog; a DDP worker whose peer
froze, ended by its own watch and restarted by Ray Train."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from typing import Any

import pytest
from ray.tune import Callback

from raylife.catalog.lookup import get_spec
from raylife.config import TrainConfig, TuneConfig
from raylife.data.prepare import prepare
from raylife.settings import Settings
from raylife.training.tune import run_sweep
from raylife.waiting import poll
from raylife_dev.bench.train_bench import Arrival, ReportClock

pytestmark = pytest.mark.slow


def _alive(class_name: str) -> list[Any]:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])


def _sweep_in_thread(*args: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """run_sweep in a thread, so a test can bound how long it waits for it."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["outcome"] = run_sweep(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _controllers() -> dict[str, str]:
    """Every Ray Train controller the cluster has seen: actor id -> state."""
    from ray.util.state import list_actors

    found = list_actors(filters=[("class_name", "=", "TrainController")], limit=10_000)
    return {a.actor_id: a.state for a in found}


class HoldUntilFitReturned(Callback):
    """Forces the interleaving that deadlocked Ray's bridge: the sweep's driver holds the
    penultimate epoch's result until the trial's Ray Train run has ended (its controller, the one
    started since this callback was made, is dead), so the last report reaches the trial only
    after fit() has returned."""

    def __init__(self, penultimate_epoch: int) -> None:
        self.penultimate_epoch = penultimate_epoch
        self.held_s: float | None = None
        self.earlier = set(_controllers())  # other tests' runs, whatever became of them

    def _run_ended(self) -> bool:
        ours = {k: v for k, v in _controllers().items() if k not in self.earlier}
        return bool(ours) and all(state == "DEAD" for state in ours.values())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if result.get("epoch") != self.penultimate_epoch or self.held_s is not None:
            return
        started = time.monotonic()
        if poll(self._run_ended, 120):
            self.held_s = time.monotonic() - started


def test_a_ddp_trials_last_report_after_fit_returned_does_not_hang_it(home):
    spec = get_spec("iris")
    base = TrainConfig(
        model="iris", hparams=spec.preset("debug").replace(epochs=3), report_interval_s=0
    )
    hold = HoldUntilFitReturned(penultimate_epoch=2)
    thread, box = _sweep_in_thread(
        base,
        TuneConfig(num_samples=1, workers_per_trial=2, scheduler="fifo"),
        Settings.from_env(),
        callbacks=[hold],
    )
    thread.join(timeout=240)
    assert not thread.is_alive(), "the sweep hung: the trial's last report deadlocked it"
    assert "error" not in box, box.get("error")
    assert hold.held_s is not None, "the interleaving was not forced"
    print(f"\nthe driver held the penultimate result {hold.held_s:.1f} s, until fit() returned")
    (trial,) = box["outcome"].trials.to_dict("records")
    assert trial["status"] == "done" and trial["epochs"] == 3


class FreezeFirstTrial(Callback):
    """A fixture fault: SIGSTOP the first trial's process at its first result (a frozen process:
    no reports, no CPU, its own watch frozen with it)."""

    def __init__(self) -> None:
        self.frozen: tuple[str, int, float] | None = None
        self.failed: dict[str, float] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if self.frozen is None:
            from ray.util.state import get_actor

            actor_id = trial.temporary_state.ray_actor._actor_id.hex()
            pid = int(get_actor(actor_id).pid)
            os.kill(pid, signal.SIGSTOP)
            self.frozen = (trial.trial_id, pid, time.monotonic())

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info):
        self.failed[trial.trial_id] = time.monotonic()


def test_a_frozen_trial_is_stopped_within_twice_its_bound_and_the_sweep_finishes(home, capfd):
    spec = get_spec("iris")
    base = TrainConfig(
        model="iris",
        hparams=spec.preset("debug").replace(epochs=400),
        report_interval_s=0,
        max_failures=0,
        stall_floor_s=5,
    )
    freeze = FreezeFirstTrial()
    thread, box = _sweep_in_thread(
        base,
        TuneConfig(num_samples=2, workers_per_trial=1, max_concurrent_trials=1, scheduler="fifo"),
        Settings.from_env(),
        callbacks=[freeze],
    )
    thread.join(timeout=300)
    assert not thread.is_alive(), "the sweep waited on the frozen trial"
    assert "error" not in box, box.get("error")
    assert freeze.frozen is not None
    frozen_id, pid, frozen_at = freeze.frozen
    out = capfd.readouterr().out
    line = re.search(rf"raylife watchdog: trial {frozen_id}: .*bound (\d+) s", out)
    assert line, out[-3000:]
    bound = float(line.group(1))
    assert bound == 2 * 5  # a one-process trial: its own floor, plus one for start-up
    stopped_s = freeze.failed[frozen_id] - frozen_at
    print(f"\nfrozen trial stopped {stopped_s:.1f} s after the freeze (bound {bound:.0f} s)")
    assert stopped_s <= 2 * bound
    statuses = dict(
        zip(box["outcome"].trials["trial"], box["outcome"].trials["status"], strict=True)
    )
    assert statuses[frozen_id] == "error"
    assert [s for t, s in statuses.items() if t != frozen_id] == ["done"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed, not left frozen holding its CPU


def test_a_ddp_run_whose_peer_froze_is_restarted_by_its_watch_and_finishes(tmp_path, capfd):
    """SIGSTOP one of two DDP workers after the first checkpoint: the other blocks in its next
    allreduce (gloo would wait 30 min), its watch ends its process past the bound, and Ray Train
    restarts the worker group from the latest checkpoint; the run finishes every epoch once."""
    import ray
    from ray.util.queue import Queue

    from raylife.training.train import TRAIN_STATE_FILE, build_trainer, storage_path

    settings = Settings.from_env(home=str(tmp_path), tracking=False)
    spec = get_spec("mnist")
    cfg = TrainConfig(
        model="mnist",
        hparams=spec.defaults.replace(epochs=4),
        num_workers=2,
        report_interval_s=0,
        max_failures=1,
        stall_floor_s=8,
    )
    data_ref = ray.put(prepare(spec, cfg.data))
    box: dict[str, Any] = {}
    reports = Queue(actor_options={"num_cpus": 0})  # when each report reached the controller
    clock = [ReportClock(reports)]
    run = threading.Thread(
        target=lambda: box.update(
            result=build_trainer(cfg, data_ref, storage_path(settings), "peer-froze", clock).fit()
        ),
        daemon=True,
    )
    run.start()
    runs = tmp_path / "runs" / "peer-froze"
    assert poll(lambda: len(list(runs.glob("checkpoint_*"))) >= 1, 180, interval_s=0.2)
    (frozen, *_) = _alive("RayTrainWorker")
    os.kill(frozen.pid, signal.SIGSTOP)
    frozen_at, frozen_wall = time.monotonic(), time.time()
    run.join(timeout=300)
    assert not run.is_alive(), "the run waited on its frozen worker"
    print(f"\nrun finished {time.monotonic() - frozen_at:.1f} s after a worker froze (bound 8 s)")
    result = box["result"]
    assert result.error is None
    with result.checkpoint.as_directory() as folder:
        import torch

        state = torch.load(f"{folder}/{TRAIN_STATE_FILE}", map_location="cpu", weights_only=True)
    assert [int(r["epoch"]) for r in state["history"]] == [1, 2, 3, 4]
    # A report needs every rank: one that arrived past the watch's bound came from a new group.
    arrivals = [Arrival(*item) for item in reports.get_nowait_batch(reports.size())]
    restarted = [a for a in arrivals if a.at > frozen_wall + cfg.stall_floor_s]
    assert restarted, "no epoch reported after the freeze: the worker group was not restarted"
    err = capfd.readouterr().err
    assert "raylife watchdog: run peer-froze rank" in err, err[-3000:]
    with pytest.raises(ProcessLookupError):
        os.kill(frozen.pid, 0)  # the frozen worker went with its group
