"""`make quality`: each model's registry default, trained over several seeds, scored on the test
split. Writes {"<model>": {"metric", "mean", "std", "ci95", "seeds", "values"}}.

A model's seeds run as one FIFO Tune grid (tune.run_sweep with `seeds`): trials sized like the
main job's (raylife.training.sizing), side by side, each with its own split and initialisation.

`via="stream"` trains the same recipes through the streaming path instead (raylife.data.streaming, as
`--data FOLDER` does): each embedded dataset is written out as files (raylife.data.export) and
split by its hashed row ids, so the two paths' figures differ by their splits, not by their
maths."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from raylife.catalog.lookup import get_spec
from raylife.config import DataConfig, TrainConfig, TuneConfig
from raylife.data.export import export_embedded
from raylife.data.prepare import prepare
from raylife.lifecycle.evaluate import evaluate_artifact
from raylife.lifecycle.store import load_artifact_dir
from raylife.lifecycle.train_and_store import local_checkpoint
from raylife.settings import Settings
from raylife.training.train import new_run_name
from raylife.training.tune import SEED, run_sweep

VIA = ("memory", "stream")
"""How the rows reach training: the in-memory path of the embedded datasets, or streaming."""

QUALITY_BARS = {"ionosphere": 0.93, "iris": 0.95, "boston": 3.8, "mnist": 0.965}
"""Floors on the mean over seeds: accuracy at least, or RMSE at most."""


def ci95(values: list[float]) -> list[float]:
    """95% confidence interval of the mean (Student's t; the seeds are few)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return [mean, mean]
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return [mean - half, mean + half]


def measure(
    models: list[str],
    seeds: list[int],
    settings: Settings,
    num_workers: int | None = None,
    say: Callable[[str], None] = print,
    via: str = "memory",
) -> dict[str, dict[str, Any]]:
    """num_workers: Ray Train workers per run; None: raylife.training.sizing decides (as in sweeps)."""
    if via not in VIA:
        raise ValueError(f"via must be one of {VIA}, not {via!r}")
    report: dict[str, dict[str, Any]] = {}
    for model in models:
        spec = get_spec(model)
        metric = spec.task_obj.metric
        data_cfg = (
            export_embedded(spec, Path(settings.home) / "quality-stream" / model)
            if via == "stream"
            else DataConfig()
        )
        # The seed moves both the split and the initialisation: variation of the whole recipe.
        grid = run_sweep(
            TrainConfig(model=model, hparams=spec.defaults, data=data_cfg),
            TuneConfig(
                num_samples=len(seeds),
                scheduler="fifo",
                workers_per_trial=num_workers,
                name=new_run_name(model, kind="quality"),
            ),
            settings,
            seeds=seeds,
        )
        by_seed = {int(row[SEED]): str(row["trial"]) for _, row in grid.trials.iterrows()}
        values = []
        for seed in seeds:
            data = prepare(spec, replace(data_cfg, seed=seed))
            with local_checkpoint(grid.chosen[by_seed[seed]]) as folder:
                scores = evaluate_artifact(load_artifact_dir(folder), data)
            values.append(scores[f"test_{metric}"])
            say(f"  {model} seed {seed}: test {metric} {values[-1]:.4f}")
        report[model] = {
            "metric": metric,
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "ci95": ci95(values),
            "seeds": list(seeds),
            "values": values,
            **({"via": via} if via != "memory" else {}),
        }
    return report


def meets_bar(model: str, entry: dict[str, Any]) -> bool:
    bar = QUALITY_BARS.get(model)
    if bar is None:
        return True
    return entry["mean"] >= bar if entry["metric"] == "accuracy" else entry["mean"] <= bar


def format_report(report: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"{'model':<11} {'metric':<9} {'mean':>7} {'std':>7} {'95% CI of the mean':>18} "
        f"{'bar':>7}  verdict"
    ]
    for model, entry in report.items():
        bar = QUALITY_BARS.get(model)
        sign = ">=" if entry["metric"] == "accuracy" else "<="
        lines.append(
            f"{model:<11} {entry['metric']:<9} {entry['mean']:>7.4f} {entry['std']:>7.4f} "
            f"{_interval(entry):>18} {sign}{bar if bar is not None else '-':>5}  "
            f"{'meets bar' if meets_bar(model, entry) else 'BELOW BAR'}"
        )
    return "\n".join(lines)


def write_report(report: dict[str, dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def _interval(entry: dict[str, Any]) -> str:
    low, high = entry.get("ci95") or (entry["mean"], entry["mean"])
    return f"{low:.4f}-{high:.4f}"
