"""`make quality`: each model's registry default, trained with Ray Train over several seeds, scored
on the test split. Writes {"<model>": {"metric", "mean", "std", "seeds", "values"}}."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylife.config import DataConfig, TrainConfig
from raylife.data import prepare
from raylife.evaluate import evaluate_artifact
from raylife.register import local_checkpoint
from raylife.registry import get_spec
from raylife.settings import Settings
from raylife.store import load_artifact_dir
from raylife.train import run_training

QUALITY_BARS = {"ionosphere": 0.94, "iris": 0.95, "boston": 4.0, "mnist": 0.96}
"""The issue's bars: accuracy at least, or RMSE at most."""


def measure(
    models: list[str],
    seeds: list[int],
    settings: Settings,
    num_workers: int = 2,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    report: dict[str, dict[str, Any]] = {}
    for model in models:
        spec = get_spec(model)
        metric = spec.task_obj.metric
        values = []
        for seed in seeds:
            # The seed moves both the split and the initialisation: variation of the whole recipe.
            cfg = TrainConfig(
                model=model,
                hparams=spec.defaults,
                data=DataConfig(seed=seed),
                seed=seed,
                num_workers=num_workers,
            )
            data = prepare(spec, cfg.data)  # once per seed: training and scoring share it
            outcome = run_training(cfg, settings, data)
            with local_checkpoint(outcome.checkpoint_path) as folder:
                scores = evaluate_artifact(load_artifact_dir(folder), data)
            values.append(scores[f"test_{metric}"])
            say(f"  {model} seed {seed}: test {metric} {values[-1]:.4f}")
        report[model] = {
            "metric": metric,
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": list(seeds),
            "values": values,
        }
    return report


def meets_bar(model: str, entry: dict[str, Any]) -> bool:
    bar = QUALITY_BARS.get(model)
    if bar is None:
        return True
    return entry["mean"] >= bar if entry["metric"] == "accuracy" else entry["mean"] <= bar


def format_report(report: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'model':<11} {'metric':<9} {'mean':>7} {'std':>7} {'bar':>6}  verdict"]
    for model, entry in report.items():
        bar = QUALITY_BARS.get(model)
        sign = ">=" if entry["metric"] == "accuracy" else "<="
        lines.append(
            f"{model:<11} {entry['metric']:<9} {entry['mean']:>7.4f} {entry['std']:>7.4f} {sign}{bar if bar is not None else '-':>4}  "
            f"{'meets bar' if meets_bar(model, entry) else 'BELOW BAR'}"
        )
    return "\n".join(lines)


def write_report(report: dict[str, dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
