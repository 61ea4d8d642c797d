"""The stall watchdog without Ray: the bound a pace derives, the watch that acts once past it, and
a real worker loop whose reports stop, ended by its own watch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from raylife.catalog.lookup import get_spec
from raylife.config import StallPolicy, TrainConfig
from raylife.errors import RaylifeError
from raylife.training.tune import driver_stall_policy
from raylife.training.watchdog import STALLED_EXIT_CODE, Beating, Pace, Watch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bound_is_the_floor_until_the_pace_says_more():
    clock = Clock()
    pace = Pace(StallPolicy(factor=4, floor_s=30), clock)
    clock.now += 25  # start-up: the floor's to cover, not part of the pace
    pace.beat()
    assert pace.slowest == 0 and pace.bound_s() == 30
    for gap in (2, 3, 12, 1):
        clock.now += gap
        pace.beat()
    assert pace.slowest == 12 and pace.bound_s() == 48
    clock.now += 48
    assert pace.stalled_s() is None  # at the bound, not past it
    clock.now += 1
    assert pace.stalled_s() == 49
    assert "bound 48 s: 4 x its slowest gap 12.0 s" in pace.describe(49)


def test_before_the_first_beat_only_the_floor_counts():
    clock = Clock()
    pace = Pace(StallPolicy(factor=5, floor_s=10), clock)
    clock.now += 10.5
    assert pace.stalled_s() == 10.5
    assert "bound 10 s: the floor" in pace.describe(10.5)


def test_factor_zero_turns_the_watch_off():
    clock = Clock()
    pace = Pace(StallPolicy(factor=0, floor_s=1), clock)
    clock.now += 1e6
    assert pace.stalled_s() is None


@pytest.mark.parametrize(("factor", "floor"), [(-1, 10), (0.5, 10), (5, 0), (5, -3)])
def test_bad_policies_are_refused_naming_the_field(factor, floor):
    with pytest.raises(RaylifeError, match="stall (factor|floor)"):
        StallPolicy(factor, floor)
    with pytest.raises(RaylifeError, match="stall (factor|floor)"):
        TrainConfig(
            model="iris",
            hparams=get_spec("iris").defaults,
            stall_factor=factor,
            stall_floor_s=floor,
        )


def test_the_driver_waits_out_every_restart_a_trial_makes():
    base = TrainConfig(
        model="iris", hparams=get_spec("iris").defaults, max_failures=2, stall_floor_s=60
    )
    # A DDP trial: Ray Train restarts its group up to 2 times, each after a worker's watch fired.
    assert driver_stall_policy(base, in_process=False).floor_s == 4 * 60
    # A one-process trial: its own watch ends the process; Tune restarts it.
    assert driver_stall_policy(base, in_process=True).floor_s == 2 * 60
    assert driver_stall_policy(base, in_process=True).factor == base.stall_factor


def test_a_watch_fires_once_past_the_bound_and_not_after_exit():
    fired: list[str] = []
    pace = Pace(StallPolicy(factor=2, floor_s=0.2))
    with Watch(pace, "run r rank 0", fired.append, poll_s=0.05):
        time.sleep(0.6)
    assert len(fired) == 1 and fired[0].startswith("raylife watchdog: run r rank 0: no progress")
    quiet: list[str] = []
    with Watch(Pace(StallPolicy(factor=2, floor_s=0.3)), "r", quiet.append, poll_s=0.05):
        pass
    time.sleep(0.5)
    assert quiet == []


def test_a_beating_loader_beats_per_batch_and_keeps_the_sampler():
    class Loader(list):
        sampler = "the sampler"

    pace = Pace(StallPolicy())
    beating = Beating(Loader([1, 2, 3]), pace)
    assert list(beating) == [1, 2, 3] and pace.beats == 3
    assert len(beating) == 3 and beating.sampler == "the sampler"


WORKER_WHOSE_REPORT_HANGS = textwrap.dedent(
    """
    import threading, time
    from raylife.config import TrainConfig
    from raylife.data.prepare import prepare
    from raylife.catalog.lookup import get_spec
    from raylife.training.train import run_worker
    from tests.unit.test_watchdog import HangingSession

    spec = get_spec("iris")
    cfg = TrainConfig(model="iris", hparams=spec.preset("debug").replace(epochs=50),
                      num_workers=1, report_interval_s=0, stall_factor=5, stall_floor_s=2)
    run_worker(cfg, prepare(spec, cfg.data), HangingSession(hang_at=3))
    print("returned")
    """
)


class HangingSession:
    """A one-process worker session whose report blocks forever from its `hang_at`-th call on:
    a runtime that stopped taking reports (the fault the watch is for)."""

    rank, world, run_name = 0, 1, "hangs"

    def __init__(self, hang_at: int) -> None:
        self.hang_at, self.reports = hang_at, 0

    def device(self):
        import torch

        return torch.device("cpu")

    def prepare_model(self, module):
        return module

    def prepare_loader(self, loader):
        return loader

    def dataset_shard(self, name):
        return None

    def latest_checkpoint(self):
        return None

    def report(self, row, checkpoint_folder):
        self.reports += 1
        if self.reports >= self.hang_at:
            time.sleep(3600)


@pytest.mark.slow
def test_a_worker_whose_reports_stop_ends_its_process_within_twice_its_bound():
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", WORKER_WHOSE_REPORT_HANGS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == STALLED_EXIT_CODE, done.stderr[-2000:]
    assert "returned" not in done.stdout
    line = next(x for x in done.stderr.splitlines() if x.startswith("raylife watchdog:"))
    assert line.startswith("raylife watchdog: run hangs rank 0: no progress for"), line
    assert "ending the process so its runtime retries the work" in line
    # Bound: the 2 s floor (iris epochs are milliseconds); the process (torch import, data)
    # starts in a few seconds more.
    assert elapsed < 2 * 2 + 20, elapsed


SCORER_WHOSE_READ_HANGS = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from raylife import storage
    from raylife.inference import batch_predict as bp
    from raylife.lifecycle.store import ModelStore
    from tests.conftest import quick_artifact
    from tests.unit.test_batch_predict import features, write_parts

    root = sys.argv[1]
    store = ModelStore(root + "/store")
    store.promote("iris", store.register(quick_artifact("iris", epochs=1)))
    X, names = features("iris")
    from pathlib import Path
    write_parts(Path(root) / "in", X, names, parts=1)
    cfg = bp.BatchConfig(model="iris", input=root + "/in", output=root + "/out",
                         store_uri=store.uri, batch_size=5, stall_factor=5, stall_floor_s=2)
    version, artifact = store.load("iris", None)
    planned = bp.plan(cfg.input, artifact.schema, None)
    staging = storage.staging_of(storage.locate(cfg.output))
    staging.fs.create_dir(staging.path)
    scorer = bp.Scorer(cfg, version, planned, artifact.schema.feature_names, staging.path)
    reads = scorer._read

    def read_then_hang(chunk):  # a read that stops (a hung remote read, say) after 3 batches
        for n, item in enumerate(reads(chunk)):
            if n == 3:
                time.sleep(3600)
            yield item

    scorer._read = read_then_hang
    chunks = [json.dumps(c.__dict__) for c in planned.chunks]
    scorer({"index": np.arange(len(chunks)), "chunk": np.asarray(chunks, dtype=object)})
    print("returned")
    """
)


@pytest.mark.slow
def test_a_batch_actor_whose_chunk_stops_ends_its_process_for_ray_data_to_retry(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCORER_WHOSE_READ_HANGS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == STALLED_EXIT_CODE, done.stderr[-2000:]
    assert "returned" not in done.stdout
    line = next(x for x in done.stderr.splitlines() if x.startswith("raylife watchdog:"))
    assert line.startswith("raylife watchdog: batch iris chunk 0: no progress for"), line


def test_a_batch_chunk_is_retried_at_most_max_failures_times():
    from raylife.inference import batch_predict as bp

    cfg = bp.BatchConfig(model="iris", input="in", output="out", store_uri="s", max_failures=1)
    assert bp.actor_options(cfg)["max_task_retries"] == 1
    with pytest.raises(RaylifeError, match="max-failures"):
        bp.BatchConfig(model="iris", input="in", output="out", store_uri="s", max_failures=-1)
