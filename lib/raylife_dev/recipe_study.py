"""`raylife recipe-study`: is the recipe `raylife init` writes for a table nobody tuned competitive
with the strong classical baselines?

For each embedded table (scikit-learn's wine, breast cancer and diabetes by default) the study
declares a model exactly as `raylife init` would: the task inferred from the target
(raylife.catalog.scaffold.infer), hyperparameters, search space and gate from
`raylife.catalog.recipe.for_table`, written with scaffold.to_toml, with `[data] embedded = NAME`.
Then, per seed, on raylife's own train/validation/test split of that seed:

- the recipe: `raylife tune --model NAME --split-seed S --seed S --tune-seed S` with the default
  budget (TuneConfig's defaults: 4 trials, ASHA); the best trial (by validation) is scored on the
  test rows as serving would score it;
- the baselines: LogisticRegression and SVC on standardised inputs (classification) or
  GradientBoostingRegressor (regression), scikit-learn's defaults with a fixed random_state,
  fitted on train + validation (they need no validation rows) and scored on the same test rows.

The recipe is "competitive" when its mean test score over the seeds lies within the 95% interval
of the best baseline's mean, or beyond it on the good side. Beside the verdict, the gap to the best
baseline paired by seed (both scored on the same test rows) and its 95% interval. The seed moves the split, the
initialisation and the search's sampling together: the interval measures the whole recipe.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from raylife.catalog import recipe
from raylife.catalog.lookup import get_spec, use_models_dir
from raylife.catalog.scaffold import infer, to_toml
from raylife.catalog.specs import ModelSpec
from raylife.config import DataConfig, TrainConfig, TuneConfig
from raylife.data.contracts import split
from raylife.data.prepare import prepare
from raylife.data.sources import EMBEDDED, load_raw
from raylife.errors import RaylifeError
from raylife.lifecycle.evaluate import evaluate_artifact
from raylife.lifecycle.store import load_artifact_dir
from raylife.lifecycle.train_and_store import local_checkpoint
from raylife.settings import Settings
from raylife.tasks import TASKS
from raylife.training.train import new_run_name
from raylife.training.tune import run_sweep
from raylife_dev.quality import ci95

DATASETS = ("wine", "breast_cancer", "diabetes")
"""Embedded tables nobody tuned a raylife recipe for (the tutorial's four have hand-made ones)."""
TARGET = "target"
"""The target column's name in the table handed to scaffold.infer."""
RANDOM_STATE = 0
"""Fixed random_state of the baselines that take one: their variation is the split's alone."""


def model_name(dataset: str) -> str:
    """The study's model of a table: its own name, so the tutorial's tables (whose names their
    hand-made declarations take) can be studied with the recipe too."""
    return f"recipe-{dataset}"


def dataset_list(text: str) -> list[str]:
    """Comma-separated embedded tables, each checked (an unknown name lists the choices)."""
    datasets = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in datasets if name not in EMBEDDED]
    if unknown or not datasets:
        raise RaylifeError(
            f"--datasets {text!r}: {', '.join(unknown) or 'no dataset'}; choose among the "
            f"embedded tables: {', '.join(EMBEDDED)}"
        )
    return datasets


def declare(dataset: str, folder: Path) -> str:
    """Write the table's declaration into `folder` as `raylife init` would; returns its name."""
    import pandas as pd

    raw = EMBEDDED[dataset]()
    if raw.input_kind != "tabular":
        raise RaylifeError(f"{dataset} holds images; the recipe is for tables: leave it out")
    frame = pd.DataFrame(raw.X, columns=raw.feature_names).assign(**{TARGET: raw.y})
    found = infer(frame, TARGET, raw.origin)
    plan = recipe.for_table(found.rows, found.features, found.task)
    name = model_name(dataset)
    document: dict[str, Any] = {
        "name": name,
        "description": f"{found.task} model of {raw.origin} (recipe-study: the recipe as written)",
        "task": found.task,
        "data": {"embedded": dataset},
        "architecture": {"kind": "mlp"},
        "hyperparameters": plan.hyperparameters,
        "debug": plan.debug,
        "search": plan.search,
        "gate": plan.gate,
    }
    folder.mkdir(parents=True, exist_ok=True)
    header = "# Written by `raylife recipe-study`: raylife.catalog.recipe.for_table, untouched.\n\n"
    (folder / f"{name}.toml").write_text(header + to_toml(document))
    return name


def baseline_scores(spec: ModelSpec, seed: int) -> dict[str, float]:
    """Each classical baseline fitted on the seed's train + validation rows, scored on its test rows
    (raylife's split: data.contracts.split, as data.prepare cuts it)."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, mean_squared_error
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    cfg = spec.data_config(DataConfig(seed=seed))
    classification = spec.task != "regression"
    train, val, test = split(load_raw(spec, cfg), cfg, stratify=classification)
    X, y = np.concatenate([train.X, val.X]), np.concatenate([train.y, val.y])
    if classification:
        models: dict[str, Any] = {
            "LogisticRegression": make_pipeline(
                StandardScaler(), LogisticRegression(max_iter=5000, random_state=RANDOM_STATE)
            ),
            "SVC": make_pipeline(StandardScaler(), SVC(random_state=RANDOM_STATE)),
        }
        return {
            k: float(accuracy_score(test.y, m.fit(X, y).predict(test.X))) for k, m in models.items()
        }
    model = GradientBoostingRegressor(random_state=RANDOM_STATE).fit(X, y)
    return {
        "GradientBoostingRegressor": float(
            np.sqrt(mean_squared_error(test.y, model.predict(test.X)))
        )
    }


def recipe_score(
    model: str, seed: int, settings: Settings, tune_cfg: TuneConfig, preset: str = "default"
) -> dict[str, Any]:
    """`raylife tune` of the declared recipe on the seed's split; the best trial's test score."""
    spec = get_spec(model)
    data_cfg = DataConfig(seed=seed)
    data = prepare(spec, data_cfg)
    base = TrainConfig(model=model, hparams=spec.preset(preset), data=data_cfg, seed=seed)
    started = time.perf_counter()
    outcome = run_sweep(base, tune_cfg, settings, data)
    with local_checkpoint(outcome.checkpoint_path) as folder:
        scores = evaluate_artifact(load_artifact_dir(folder), data)
    metric = spec.task_obj.metric
    return {
        "test": scores[f"test_{metric}"],
        "val": outcome.best_metrics.get(f"val_{metric}"),
        "sweep_s": round(time.perf_counter() - started, 1),
        "best_config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in outcome.best_config.items()
        },
    }


def summary(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "ci95": ci95(values), "values": values}


def best_baseline(baselines: dict[str, dict[str, Any]], mode: str) -> str:
    """The baseline with the best mean test score in the metric's direction."""
    pick = max if mode == "max" else min
    return pick(baselines, key=lambda name: baselines[name]["mean"])


def competitive(recipe_mean: float, baseline_ci: list[float], mode: str) -> bool:
    """The recipe's mean within the baseline's 95% interval, or better than all of it."""
    low, high = baseline_ci
    return recipe_mean >= low if mode == "max" else recipe_mean <= high


def study_dataset(
    dataset: str,
    seeds: list[int],
    settings: Settings,
    tune_cfg: TuneConfig,
    preset: str = "default",
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One dataset's entry: the recipe and each baseline over the seeds, and the verdict.
    The dataset's declaration must already be in the models folder (declare)."""
    model = model_name(dataset)
    spec = get_spec(model)
    task = TASKS[spec.task]
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    by_baseline: dict[str, list[float]] = {}
    for seed in seeds:
        name = new_run_name(model, kind="tune")
        cfg = dataclasses.replace(tune_cfg, seed=seed, name=name)
        runs.append(recipe_score(model, seed, settings, cfg, preset))
        for name, value in baseline_scores(spec, seed).items():
            by_baseline.setdefault(name, []).append(value)
        say(
            f"  {dataset} seed {seed}: recipe test {task.metric} {runs[-1]['test']:.4f} "
            f"({runs[-1]['sweep_s']:.0f} s); "
            + ", ".join(f"{k} {v[-1]:.4f}" for k, v in by_baseline.items())
        )
    baselines = {name: summary(values) for name, values in by_baseline.items()}
    best = best_baseline(baselines, task.mode)
    ours = summary([run["test"] for run in runs])
    # The seeds pair the two (same split): the gap's interval is narrower than either mean's.
    gaps = [a - b for a, b in zip(ours["values"], baselines[best]["values"], strict=True)]
    return {
        "task": spec.task,
        "metric": task.metric,
        "mode": task.mode,
        "rows": _shape(spec),
        "recipe": {**ours, "runs": runs, "hyperparameters": spec.defaults.to_dict()},
        "baselines": baselines,
        "best_baseline": best,
        "competitive": competitive(ours["mean"], baselines[best]["ci95"], task.mode),
        "gap_to_best": summary(gaps),
        "seeds": list(seeds),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _shape(spec: ModelSpec) -> list[int]:
    raw = load_raw(spec, spec.data_config(DataConfig()))
    return [int(raw.X.shape[0]), int(raw.X.shape[1])]


def run(
    datasets: list[str],
    seeds: list[int],
    settings: Settings,
    tune_cfg: TuneConfig | None = None,
    preset: str = "default",
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The study: every dataset declared in a models folder under the home, then studied."""
    tune_cfg = tune_cfg or TuneConfig()
    # A folder that outlives the study, not a temporary one: a local Ray cluster started inside
    # the block hands $RAYLIFE_MODELS to its workers, which must still find it.
    folder = Path(settings.home) / "recipe-study" / "models"
    started = time.perf_counter()
    with use_models_dir(folder):
        for dataset in datasets:
            declare(dataset, folder)
        entries = {
            dataset: study_dataset(dataset, seeds, settings, tune_cfg, preset, say)
            for dataset in datasets
        }
    return {
        "budget": {
            "num_samples": tune_cfg.num_samples,
            "scheduler": tune_cfg.scheduler,
            "preset": preset,
        },
        "machine": {"cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(time.perf_counter() - started, 1),
        "datasets": entries,
    }


def format_table(report: dict[str, Any]) -> str:
    """The markdown table of docs/performance.md."""
    lines = [
        "| dataset (rows x features) | metric | recipe: mean [95% CI] | best baseline: mean "
        "[95% CI] | other baselines | recipe - best, paired by seed [95% CI] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["datasets"].items():
        best = entry["best_baseline"]
        others = ", ".join(
            f"{other} {values['mean']:.4f}"
            for other, values in entry["baselines"].items()
            if other != best
        )
        better = "higher" if entry["mode"] == "max" else "lower"
        rows, features = entry["rows"]
        lines.append(
            f"| {name} ({rows} x {features}) | {entry['metric']} ({better} is better) | "
            f"{_cell(entry['recipe'])} | {best} {_cell(entry['baselines'][best])} | "
            f"{others or '-'} | {_cell(entry['gap_to_best'], '+.4f')} | "
            f"{'competitive' if entry['competitive'] else 'NOT competitive'} |"
        )
    return "\n".join(lines)


def _cell(values: dict[str, Any], form: str = ".4f") -> str:
    low, high = values["ci95"]
    return f"{values['mean']:{form}} [{low:{form}}, {high:{form}}]"


def write_report(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
