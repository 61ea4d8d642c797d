"""Faults survived on the real local cluster, with figures: a Train worker killed mid-run, a sweep's
driver killed mid-sweep, and no source file that loads weights without weights_only=True.

Serve's faults (replica killed under load, overload, fuzzing) are in test_serve_faults.py.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from raylife.catalog.lookup import get_spec
from raylife.config import TrainConfig
from raylife.data.prepare import prepare
from raylife.settings import Settings
from raylife.tracking import runs as tracking
from raylife.training.train import TRAIN_STATE_FILE, build_trainer, storage_path
from raylife.training.tune import EXPERIMENT_STATE_PERIOD_S
from raylife.waiting import poll
from raylife_dev.bench.train_bench import Arrival, ReportClock

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _alive_actors(class_name: str) -> list[Any]:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])


def _fit(
    cfg: TrainConfig, settings: Settings, data_ref: Any, run_name: str, callbacks: Any = None
) -> Any:
    return build_trainer(cfg, data_ref, storage_path(settings), run_name, callbacks).fit()


def _final_state(result: Any) -> dict[str, Any]:
    with result.checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)


def _checkpoints(settings: Settings, run_name: str) -> int:
    return len(list((Path(settings.runs_uri) / run_name).glob("checkpoint_*")))


def _mlflow_runs(settings: Settings, model: str) -> dict[str, tuple[str, list[int]]]:
    """Run name -> (status, val_loss steps) of every MLflow run of the model's experiment."""
    assert settings.mlflow_uri is not None
    client = tracking.client(settings.mlflow_uri)
    experiment = client.get_experiment_by_name(tracking.experiment_name(model))
    return {
        run.info.run_name: (
            run.info.status,
            sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")),
        )
        for run in client.search_runs([experiment.experiment_id])
    }


def test_killed_train_worker_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL one of two DDP workers after its 2nd checkpoint: Ray Train restarts the group from
    the last checkpoint; at most one epoch of work is lost; the final accuracy matches an
    uninterrupted run of the same config."""
    import ray
    from ray.util.queue import Queue

    settings = Settings.from_env(home=str(tmp_path), tracking_uri=tracked_uri(tmp_path))
    spec = get_spec("mnist")
    cfg = TrainConfig(model="mnist", hparams=spec.defaults.replace(epochs=5), num_workers=2)
    killed_cfg = tracking.prepare(cfg.replace(tracking=tracking.config_for(settings)))
    data_ref = ray.put(prepare(spec, cfg.data))

    results: dict[str, Any] = {}
    reports = Queue(actor_options={"num_cpus": 0})  # when each report reached the controller
    clock = [ReportClock(reports)]
    run = threading.Thread(
        target=lambda: results.update(
            killed=_fit(killed_cfg, settings, data_ref, "fault-kill", clock)
        )
    )
    run.start()
    poll(lambda: _checkpoints(settings, "fault-kill") >= 2, timeout_s=180, interval_s=0.2)
    workers = _alive_actors("RayTrainWorker")
    assert _checkpoints(settings, "fault-kill") >= 2 and workers, "the run never got going"
    killed_at = time.time()
    os.kill(workers[-1].pid, signal.SIGKILL)
    run.join(timeout=300)
    baseline = _fit(cfg, settings, data_ref, "fault-baseline")

    killed = results["killed"]
    assert killed.error is None
    state = _final_state(killed)
    epochs = [int(row["epoch"]) for row in state["history"]]
    assert epochs == [1, 2, 3, 4, 5], "every epoch exactly once in the final history"
    arrivals = [Arrival(*item) for item in reports.get_nowait_batch(reports.size())]
    saved = [a for a in arrivals if a.at <= killed_at]
    assert saved and len(saved) < len(arrivals), "no report after the kill: no restarted group"
    resumed_from = saved[-1].epoch  # the group restarted from the last checkpoint reported
    epoch_s = statistics.median(row["epoch_s"] for row in state["history"])
    lost_s = killed_at - saved[-1].at
    lost_epochs = lost_s / epoch_s
    print(
        f"\nworker killed {lost_s:.2f} s after the last checkpointed epoch ({lost_epochs:.2f} epochs of"
        f" {epoch_s:.2f} s); resumed at epoch {resumed_from + 1}"
    )
    # Work lost: the epoch in progress, plus the checkpoint write that follows an epoch.
    assert lost_epochs <= 1.0 + 0.5 / epoch_s
    accuracy = state["history"][-1]["val_accuracy"]
    reference = _final_state(baseline)["history"][-1]["val_accuracy"]
    print(f"val accuracy after the kill {accuracy:.4f}, uninterrupted {reference:.4f}")
    assert abs(accuracy - reference) <= 0.02
    # The restarted worker group continued the same MLflow run: one run, each epoch once.
    assert _mlflow_runs(settings, "mnist") == {"fault-kill": ("FINISHED", [1, 2, 3, 4, 5])}


def tracked_uri(home: Path) -> str:
    """A local MLflow store under `home`, copied from an empty migrated one (see conftest)."""
    import shutil

    from tests.conftest import mlflow_template

    target = home / "mlflow" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_template(), target)
    return f"sqlite:///{target}"


def _sweep_command(home: Path, name: str) -> list[str]:
    return [
        sys.executable, "-m", "raylife.cli", "tune", "--model", "iris", "--preset", "debug",
        "--epochs", "3", "--samples", "4", "--num-workers", "1", "--name", name,
    ]  # fmt: skip


def test_killed_sweep_driver_resumes_without_rerunning_finished_trials(tmp_path):
    """SIGKILL the process that called Tuner.fit after its first trial finished; the same command
    again resumes the sweep: no finished trial runs again, every trial ends up done."""
    import ray

    from raylife.cluster import dashboard_url

    env = {
        **os.environ,
        "RAYLIFE_MLFLOW_URI": tracked_uri(tmp_path),
        "RAYLIFE_HOME": str(tmp_path),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "PYTHONUNBUFFERED": "1",
    }
    assert dashboard_url()  # the session cluster is up; the sweep driver joins it
    command = _sweep_command(tmp_path, "fault-sweep")
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    lines: list[str] = []
    for line in first.stdout:
        lines.append(line)
        if "finished after" in line:
            # The sweep's state is saved each EXPERIMENT_STATE_PERIOD_S: wait for the save.
            time.sleep(float(EXPERIMENT_STATE_PERIOD_S) + 1.0)
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    saved = set(re.findall(r"trial (\S+) finished after", "".join(lines)))
    assert saved, "".join(lines)[-2000:]
    # Trials side by side may have finished during the wait too: whether their end was saved
    # before the kill is a race, so they may or may not run again; the first one may not.
    lines.append(first.stdout.read())
    finished_before = set(re.findall(r"trial (\S+) finished after", "".join(lines)))

    second = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert second.returncode == 0, second.stderr[-2000:]
    started_again = set(re.findall(r"trial (\S+) started", second.stdout))
    finished_after = set(re.findall(r"trial (\S+) finished after", second.stdout))
    print(
        f"\nfinished before the kill: {sorted(finished_before)}; run on resume: {sorted(started_again)}"
    )
    assert not saved & started_again, "a trial whose end was saved ran again"
    assert len(finished_before | finished_after) == 4, second.stdout[-2000:]
    # The restored sweep continued its MLflow runs: one parent, one run per trial, each epoch
    # of a trial at most once (a trial cut short by the kill resumes its own run).
    runs = _mlflow_runs(
        Settings.from_env(home=str(tmp_path), tracking_uri=env["RAYLIFE_MLFLOW_URI"]), "iris"
    )
    assert set(runs) == {"fault-sweep"} | {
        f"fault-sweep-{t}" for t in finished_before | finished_after
    }
    for name, (status, steps) in runs.items():
        assert status == "FINISHED", (name, status)
        assert name == "fault-sweep" or steps == list(range(1, len(steps) + 1)), (name, steps)
