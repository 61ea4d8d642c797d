"""The life-cycle on a real local Ray cluster: train (DDP, 2 workers), resume, sweep, promote, predict."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from raylife.cli import main
from raylife.lifecycle.store import ModelStore
from raylife.settings import Settings
from raylife.tracking import runs as tracking


def raylife(command: str) -> int:
    """Run the CLI in-process (it joins the session's Ray cluster instead of starting one)."""
    return main(command.split())


def _store(home: Path) -> ModelStore:
    return ModelStore(str(home / "store"))


def _latest_history(home: Path, model: str) -> list[dict]:
    store = _store(home)
    return store.metadata(model, store.versions(model)[-1])["history"]


@pytest.mark.parametrize("model", ["iris", "mnist"])
def test_two_worker_training_registers_and_promotes(home, capsys, model):
    assert (
        raylife(f"train --model {model} --preset debug --epochs 2 --num-workers 2 --promote") == 0
    )
    out = capsys.readouterr().out
    assert "2 epochs" in out and "promoted" in out
    store = _store(home)
    [version] = store.versions(model)
    assert store.pointer(model).version == version
    meta = store.metadata(model, version)
    assert [row["epoch"] for row in meta["history"]] == [1, 2]
    assert meta["run"]["num_workers"] == 2 and meta["run"]["source"] == "train"
    assert Path(meta["run"]["checkpoint"]).is_dir()
    assert {"val_accuracy", "test_accuracy"} <= set(meta["metrics"])


def test_resume_continues_from_the_latest_checkpoint(tracked_home, capsys):
    home = tracked_home
    # Every epoch reported (interval 0) so the latest checkpoint is the last epoch.
    common = "train --model iris --preset debug --report-interval-s 0"
    assert raylife(f"{common} --epochs 2 --run-name resumable") == 0
    first = _latest_history(home, "iris")
    # A different seed on resume: rows restored from the checkpoint must equal the first run's,
    # which a restart from scratch (new init and batch order) could not reproduce.
    assert raylife(f"{common} --epochs 4 --seed 7 --resume resumable") == 0
    capsys.readouterr()
    history = _latest_history(home, "iris")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert first and history[: len(first)] == first
    # `--resume` continued the same MLflow run: one run, each epoch logged once.
    uri = Settings.from_env().mlflow_uri
    assert uri is not None
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name(tracking.experiment_name("iris"))
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_name for run in runs] == ["resumable"]
    steps = client.get_metric_history(runs[0].info.run_id, "val_loss")
    assert sorted(m.step for m in steps) == [1, 2, 3, 4]


def test_sweep_promotes_best_trial_and_predicts(home, capsys):
    # Trials scored at their last epoch (the registry's choice for three models; the other tests'
    # sweeps use the debug preset's best epoch).
    command = "tune --model iris --preset debug --epochs 2 --samples 2 --epoch-selection last"
    assert raylife(f"{command} --promote") == 0
    out = capsys.readouterr().out
    assert "best config:" in out and "promoted iris" in out and "(last epoch)" in out
    assert "epochs in" in out and ": last val_accuracy " in out  # progress lines say so too
    store = _store(home)
    version = store.pointer("iris").version
    meta = store.metadata("iris", version)
    assert meta["run"]["source"] == "tune" and meta["metrics"]["epoch"] == 2
    assert set(meta["run"]["trial_hparams"]) == {"lr", "hidden_sizes", "batch_size"}
    # the promoted artifact carries the trial's sampled hyperparameters
    assert meta["run"]["hparams"]["lr"] == pytest.approx(meta["run"]["trial_hparams"]["lr"])
    rows = "[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]"
    assert main(["predict", "--model", "iris", "--input", rows]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == version and len(answer["predictions"]) == 2
    assert raylife("evaluate --model iris") == 0
    assert "test_accuracy" in capsys.readouterr().out


def test_a_ddp_sweep_runs_its_trials_as_ray_train_runs(home, capsys):
    """--num-workers 2: each trial is a 2-worker TorchTrainer run (the path sizing picks where a
    step pays for its allreduce and the CPUs are spare)."""
    assert raylife("tune --model iris --preset debug --epochs 3 --samples 2 --num-workers 2") == 0
    out = capsys.readouterr().out
    assert "trials: 2 workers each" in out and "set by --num-workers" in out
    version = re.search(r"registered iris version (\S+):", out)
    assert version, out[-2000:]
    assert _store(home).metadata("iris", version.group(1))["run"]["num_workers"] == 2


def test_quality_report_shape(home, tmp_path, capsys):
    output = tmp_path / "quality.json"
    assert raylife(f"quality --models iris --seeds 0,1 --output {output}") == 0
    report = json.loads(output.read_text())
    assert list(report) == ["iris"]
    entry = report["iris"]
    assert set(entry) == {"metric", "mean", "std", "ci95", "seeds", "values"}
    assert entry["metric"] == "accuracy" and entry["seeds"] == [0, 1] and len(entry["values"]) == 2
    assert 0.0 <= entry["mean"] <= 1.0
    low, high = entry["ci95"]
    assert low <= entry["mean"] <= high
    # The seeds ran as one grid: each value is its own seed's split (two splits of 23 rows
    # rarely give the same accuracy with the same recipe, but they may: no equality check).


def test_quality_through_the_streaming_path(home, tmp_path, monkeypatch):
    # Iris written out as a Parquet folder and trained through Ray Data (hashed splits): a broken
    # stream (wrong labels, unscaled features, lost rows) scores near chance (0.33). The recipe
    # runs 30 epochs instead of 100 here (each epoch is a Ray Data pass: about 0.6 s).
    from raylife.catalog.lookup import get_spec
    from raylife_dev import quality

    spec = get_spec("iris")
    shorter = dataclasses.replace(spec, declared_defaults=spec.defaults.replace(epochs=30))
    monkeypatch.setattr(quality, "get_spec", lambda _: shorter)
    report = quality.measure(["iris"], [0, 1], Settings.from_env(), via="stream", say=print)
    assert report["iris"]["via"] == "stream" and min(report["iris"]["values"]) >= 0.8
    assert (home / "quality-stream" / "iris" / "part-000.parquet").exists()


def test_a_seeds_grid_on_a_streamed_source_is_split_by_the_driver(tmp_path):
    # A trial that read the source itself would hang once the trials hold every CPU (Ray Data's
    # Parquet sampling task needs one): the driver prepares every other seed's split up front.
    import ray

    from raylife.catalog.lookup import get_spec
    from raylife.config import TrainConfig
    from raylife.data.export import export_embedded
    from raylife.training.tune import split_refs

    spec = get_spec("iris")
    streamed = TrainConfig(
        model="iris", hparams=spec.defaults, data=export_embedded(spec, tmp_path)
    )
    refs = split_refs(spec, streamed, [0, 1, 2])
    assert sorted(refs) == [1, 2]  # seed 0 is the base split, prepared once already
    assert ray.get(refs[2]).provenance["split_seed"] == 2
    assert split_refs(spec, TrainConfig(model="iris", hparams=spec.defaults), [0, 1]) == {}


@pytest.mark.parametrize("selection", ["best", "last"])
def test_epoch_selection_picks_the_run_checkpoint(home, capsys, selection):
    # Every epoch reported with a checkpoint, so both choices are among the kept checkpoints.
    assert (
        raylife(
            "train --model iris --preset debug --epochs 4 --lr 0.05 --report-interval-s 0 "
            f"--epoch-selection {selection}"
        )
        == 0
    )
    assert f"({selection} epoch)" in capsys.readouterr().out
    store = _store(home)
    meta = store.metadata("iris", store.versions("iris")[-1])
    chosen = meta["metrics"]
    # Ray keeps the best checkpoints by validation objective and the latest: both candidates.
    kept = [
        json.loads(path.read_text())["metrics"]
        for path in Path(meta["run"]["checkpoint"]).parent.glob("checkpoint_*/artifact.json")
    ]
    assert max(row["epoch"] for row in kept) == 4
    if selection == "last":
        assert chosen["epoch"] == 4
    else:
        assert chosen["val_objective"] == max(row["val_objective"] for row in kept)
    assert meta["run"]["hparams"]["epoch_selection"] == selection
