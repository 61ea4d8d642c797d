"""Workers per sweep trial (raylife.training.sizing) and the sweep's concurrency (raylife.training.tune)."""

from __future__ import annotations

import pytest

from raylife.catalog.lookup import get_spec
from raylife.config import TrainConfig, TuneConfig
from raylife.data.prepare import prepare
from raylife.training import sizing
from raylife.training.tune import concurrent_trials, required_cpus, trial_cpus


def _cfg(model: str, **changes) -> TrainConfig:
    return TrainConfig(model=model, hparams=get_spec(model).defaults, **changes)


@pytest.fixture(scope="module")
def iris_data():
    return prepare(get_spec("iris"), _cfg("iris").data)


def test_a_tutorial_mlp_step_is_measured_and_too_small_for_ddp(iris_data):
    plan = sizing.plan_trials(_cfg("iris"), iris_data, None, cpus=64, trials=4)
    # A 4-feature MLP step is about a millisecond; the modelled allreduce alone is 3 ms.
    assert 0 < plan.step_s < sizing.DDP_PAYS_FACTOR * plan.allreduce_s
    assert plan.num_workers == 1 and plan.in_process
    assert "DDP would slow each step" in plan.reason


def test_ddp_only_where_the_step_pays_and_cpus_are_spare(iris_data, monkeypatch):
    monkeypatch.setattr(sizing, "measure_step_s", lambda cfg, data: (0.2, 100_000))
    spare = sizing.plan_trials(_cfg("iris"), iris_data, None, cpus=16, trials=4)
    assert spare.num_workers == sizing.DDP_WORKERS and "DDP pays" in spare.reason
    full = sizing.plan_trials(_cfg("iris"), iris_data, None, cpus=2, trials=4)
    assert full.num_workers == 1 and "already fill the 2 CPUs" in full.reason


def test_the_user_choice_wins_and_gpu_trials_take_one_gpu(iris_data):
    assert sizing.plan_trials(_cfg("iris"), iris_data, 3, cpus=2, trials=4).num_workers == 3
    gpu = sizing.plan_trials(_cfg("iris", use_gpu=True), iris_data, None, cpus=64, trials=4)
    assert gpu.num_workers == 1 and "GPU" in gpu.reason


def test_allreduce_cost_grows_with_the_gradient():
    assert sizing.allreduce_s(10) == pytest.approx(sizing.ALLREDUCE_LATENCY_S, rel=1e-3)
    assert sizing.allreduce_s(1_000_000) > sizing.allreduce_s(10_000)


def test_one_process_trials_fill_the_cpus_ddp_trials_leave_room():
    one, ddp = _cfg("iris", num_workers=1), _cfg("iris", num_workers=2)
    assert trial_cpus(one) == 1 and trial_cpus(ddp) == 3
    assert concurrent_trials(one, TuneConfig(num_samples=4), cluster_cpus=2) == 2
    assert concurrent_trials(one, TuneConfig(num_samples=1), cluster_cpus=8) == 1
    # 6 CPUs hold two DDP trials, one of them kept free for a stopped trial's workers to drain.
    assert concurrent_trials(ddp, TuneConfig(num_samples=4), cluster_cpus=6) == 1
    assert concurrent_trials(one, TuneConfig(num_samples=4, max_concurrent_trials=3), 2) == 3
    assert required_cpus(one, TuneConfig(max_concurrent_trials=2)) == 2
    assert required_cpus(ddp, TuneConfig(max_concurrent_trials=2)) == 9
