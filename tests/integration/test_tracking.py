"""A real sweep tracked in MLflow on the session's Ray cluster: the sweep is a parent run, each
trial a nested run with its per-epoch metrics, the registered version an MLflow Model; running
the sweep again under its name (Tune restores it) duplicates no run and no step."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from raylife.cli import main
from raylife.settings import Settings
from raylife.tracking import runs as tracking


def snapshot() -> dict[str, dict[str, Any]]:
    """Every run of the iris experiment: id, kind, parent, status, its val_loss steps, params and
    top-level artifact files."""
    uri = Settings.from_env().mlflow_uri
    assert uri is not None
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name(tracking.experiment_name("iris"))
    runs = client.search_runs([experiment.experiment_id])
    return {
        run.info.run_name: {
            "id": run.info.run_id,
            "kind": run.data.tags.get(tracking.KIND_TAG),
            "parent": run.data.tags.get(tracking.PARENT_TAG),
            "status": run.info.status,
            "steps": sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")),
            "params": run.data.params,
            "files": {f.path for f in client.list_artifacts(run.info.run_id)},
        }
        for run in runs
    }


def test_a_sweep_is_a_parent_run_with_nested_trials_and_a_resume_duplicates_nothing(
    tracked_home: Path, capsys
):
    name = "tune-iris-mlflow"
    args = ["tune", "--model", "iris", "--preset", "debug", "--epochs", "2", "--samples", "2"]
    assert main([*args, "--name", name]) == 0
    out = capsys.readouterr().out
    runs = snapshot()
    parent = runs.pop(name)
    assert parent["kind"] == "sweep" and parent["status"] == "FINISHED"
    assert parent["params"]["tune_num_samples"] == "2"
    assert len(runs) == 2, runs  # one nested run per trial, nothing else
    for trial, run in runs.items():
        assert trial.startswith(f"{name}-") and run["kind"] == "trial"
        assert run["parent"] == parent["id"] and run["status"] == "FINISHED"
        assert run["steps"] == list(range(1, len(run["steps"]) + 1)) and run["steps"], run
        assert run["params"]["epochs"] == "2"
        # Logged by the sweep's driver from the trial's last checkpoint: a trial stopped at a
        # report (ASHA, or its last epoch) never reaches code after that report.
        assert {"artifact", "learning_curves.png"} <= run["files"], run["files"]

    version = re.search(r"registered iris version (\S+):", out)
    assert version, out
    from raylife.tracking.registry_mirror import Mirror

    config = tracking.config_for(Settings.from_env())
    assert config is not None
    assert version.group(1) in Mirror(config).mirrored("iris")

    # The same name again: Tune restores the finished sweep; MLflow gets no new run or step.
    assert main([*args, "--name", name]) == 0
    again = snapshot()
    assert again.pop(name)["id"] == parent["id"]
    assert {k: (v["id"], v["steps"]) for k, v in again.items()} == {
        k: (v["id"], v["steps"]) for k, v in runs.items()
    }


def test_a_ddp_trial_is_tracked_from_rank_0s_reports(tracked_home: Path):
    """A trial of 2 Ray Train workers: rank 0's reports reach the sweep's driver through Ray
    Train and Tune (trial_bridge), epochs' rows and last checkpoint included."""
    name = "tune-iris-ddp-mlflow"
    args = ["tune", "--model", "iris", "--preset", "debug", "--epochs", "2", "--samples", "1"]
    assert main([*args, "--num-workers", "2", "--name", name]) == 0
    runs = snapshot()
    parent = runs.pop(name)
    (trial,) = [run for run_name, run in runs.items() if run_name.startswith(f"{name}-")]
    assert trial["kind"] == "trial" and trial["parent"] == parent["id"]
    assert trial["params"]["num_workers"] == "2" and trial["steps"] == [1, 2], trial
    assert {"artifact", "learning_curves.png"} <= trial["files"], trial["files"]
