"""`raylife selection-study`: how should a run end? Constant or cosine-decayed learning rate, and
the best-validation epoch's weights or the last epoch's?

The registry's `lr_schedule` and `epoch_selection` defaults are chosen here, without touching a row
that `make quality` scores: the study keeps only the rows outside the test split of every quality
seed (the development rows) and runs repeated k-fold cross-validation on them. Each outer fold
plays the test split; the other development rows are split into train/validation as a run splits
its non-test rows; the registry defaults are trained on them once per schedule, and both epoch
choices are scored on the outer fold from that same fit. All four endings see the same folds, so
their differences are paired.

Plain PyTorch, no Ray: the same `raylife.training.loop` code the Ray Train workers run (data parallelism
does the same maths on the same global batch), so hundreds of small fits take minutes.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from raylife.catalog.lookup import get_spec
from raylife.catalog.specs import ModelSpec
from raylife.config import DataConfig, Hyperparams
from raylife.data.contracts import RawData, Split, cut, fit_preprocessing, split
from raylife.data.sources import load_raw
from raylife.errors import RaylifeError
from raylife.tasks import Task


def development_rows(raw: RawData, cfg: DataConfig, seeds: list[int], stratify: bool) -> np.ndarray:
    """Indices of the rows in no seed's test split, found by splitting row indices exactly as
    `data.split` splits the rows themselves (same function, same seeds)."""
    if raw.X_test is not None:
        return np.arange(len(raw.y))  # the dataset fixes its own test split: never among these
    indices = RawData(np.arange(len(raw.y)).reshape(-1, 1), raw.y, ["row"], None, "tabular", "")
    tested: set[int] = set()
    for seed in seeds:
        _, _, test = split(
            indices, DataConfig(seed=seed, test_fraction=cfg.test_fraction), stratify
        )
        tested.update(int(i) for i in test.X[:, 0])
    return np.array(sorted(set(range(len(raw.y))) - tested))


@dataclass(frozen=True)
class FoldJob:
    model: str
    hparams: Hyperparams
    fit_rows: np.ndarray
    """Development rows outside the outer fold: split into train and validation."""
    outer_rows: np.ndarray
    """The outer fold: scored, never trained or selected on."""
    val_share: float
    seed: int


@dataclass(frozen=True)
class FoldScore:
    rows: int
    best: float
    """Outer-fold metric of the epoch with the best validation objective."""
    last: float
    """Outer-fold metric of the last epoch."""


def fit_fold(job: FoldJob) -> FoldScore:
    """Train on one fold's train rows; score the outer fold at the best-validation and last epochs."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import torch

    from raylife.catalog.architectures import build_model
    from raylife.training import loop

    torch.set_num_threads(1)
    spec = get_spec(job.model)
    task, raw = spec.task_obj, _raw(spec)
    classification = task.is_classification
    train_rows, val_rows = cut(
        job.fit_rows, job.val_share, job.seed, raw.y if classification else None
    )
    pre = fit_preprocessing(raw, Split(raw.X[train_rows], raw.y[train_rows]), not classification)
    target_std = pre.target_std or 1.0

    def part(rows: np.ndarray) -> Split:
        return Split(pre.transform(raw.X[rows]), pre.transform_target(raw.y[rows]))

    n_outputs = task.output_size(len(raw.label_names or []))
    loop.seed_everything(job.seed)
    model = build_model(
        spec.architecture, spec.model_args(job.hparams, list(raw.X.shape[1:]), n_outputs)
    )
    optimizer = loop.make_optimizer(job.hparams, model.parameters())
    loader = loop.make_loader(part(train_rows), task, job.hparams.batch_size, job.seed)
    val_X, val_y = loop.as_tensors(part(val_rows), task)
    outer_X, outer_y = loop.as_tensors(part(job.outer_rows), task)
    best_objective: float | None = None
    at_best = at_last = math.nan
    for epoch in loop.fit(model, loader, task, optimizer, job.hparams, val=(val_X, val_y)):
        objective = task.objective(task.finalize(epoch.val_sums, target_std))
        at_last = task.finalize(loop.evaluate(model, outer_X, outer_y, task), target_std)[
            task.metric
        ]
        if task.is_better(objective, best_objective):
            best_objective, at_best = objective, at_last
    return FoldScore(len(job.outer_rows), at_best, at_last)


_RAW_CACHE: dict[str, RawData] = {}


def _raw(spec: ModelSpec) -> RawData:
    """The embedded dataset, loaded once per process (pool workers score many folds)."""
    if spec.name not in _RAW_CACHE:
        _RAW_CACHE[spec.name] = load_raw(spec, DataConfig())
    return _RAW_CACHE[spec.name]


def pooled(metric: str, scores: list[tuple[int, float]]) -> float:
    """One figure over folds of different sizes: accuracy by row, RMSE from the pooled squares."""
    rows = sum(n for n, _ in scores)
    if metric == "rmse":
        return math.sqrt(sum(n * v * v for n, v in scores) / rows)
    return sum(n * v for n, v in scores) / rows


def fold_jobs(
    model: str,
    seeds: list[int],
    folds: int,
    repeats: int,
    hparams: Hyperparams | None = None,
    first_repeat: int = 0,
) -> tuple[list[FoldJob], int]:
    """Every (repeat, fold) job of one model, and the number of development rows. Repeats are
    numbered from first_repeat: other numbers give fresh folds and initialisations (to confirm a
    choice on folds it was not chosen on)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    spec = get_spec(model)
    cfg = DataConfig()
    raw = _raw(spec)
    classification = spec.task_obj.is_classification
    dev = development_rows(raw, cfg, seeds, stratify=classification)
    if len(dev) < 2 * folds:
        raise RaylifeError(
            f"{model}: {len(dev)} development rows cannot make {folds} folds; use fewer"
        )
    val_share = cfg.val_fraction / (1 - cfg.test_fraction)  # as data.split sizes validation
    jobs = []
    for repeat in range(first_repeat, first_repeat + repeats):
        kfold = (StratifiedKFold if classification else KFold)(
            folds, shuffle=True, random_state=1000 + repeat
        )
        for fold, (fit_idx, outer_idx) in enumerate(kfold.split(dev, raw.y[dev])):
            jobs.append(
                FoldJob(
                    model,
                    hparams or spec.defaults,
                    dev[fit_idx],
                    dev[outer_idx],
                    val_share,
                    seed=repeat * folds + fold,
                )
            )
    return jobs, len(dev)


SCHEDULES = ("constant", "cosine")
BASELINE = ("constant", "best")
"""The conventional ending: a constant rate and early stopping on the validation split."""


Ending = tuple[str, str]
"""(lr_schedule, epoch_selection)"""


def choose_ending(
    task: Task, by_ending: dict[Ending, list[tuple[int, float]]]
) -> tuple[dict[Ending, float], Ending, list[float]]:
    """Pooled score of each ending over its (rows, score) folds, the best one in the task's
    direction, and its per-fold gains over BASELINE (paired: same rows, split and seed)."""
    results = {ending: pooled(task.metric, values) for ending, values in by_ending.items()}
    chosen = max(results, key=lambda ending: task.gain(results[ending], 0.0))
    gains = [
        task.gain(mine, theirs)
        for (_, mine), (_, theirs) in zip(by_ending[chosen], by_ending[BASELINE], strict=True)
    ]
    return results, chosen, gains


def study_model(
    model: str,
    seeds: list[int],
    folds: int,
    repeats: int,
    processes: int = 2,
    hparams: Hyperparams | None = None,
    first_repeat: int = 0,
) -> dict[str, Any]:
    """Every ending of one model over the same folds; the best one, and its paired gain over the
    baseline with that gain's standard error."""
    spec = get_spec(model)
    metric = spec.task_obj.metric
    base = hparams or spec.defaults
    folds_of_base, dev_rows = fold_jobs(model, seeds, folds, repeats, base, first_repeat)
    # The same folds and seeds under each schedule: the endings' differences are paired.
    jobs = [
        replace(job, hparams=base.replace(lr_schedule=schedule))
        for schedule in SCHEDULES
        for job in folds_of_base
    ]
    started = time.monotonic()
    if processes > 1:
        with get_context("fork").Pool(processes) as pool:
            scores = pool.map(fit_fold, jobs, chunksize=1)
    else:
        scores = [fit_fold(job) for job in jobs]
    by_ending: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for job, score in zip(jobs, scores, strict=True):
        schedule = job.hparams.lr_schedule
        by_ending.setdefault((schedule, "best"), []).append((score.rows, score.best))
        by_ending.setdefault((schedule, "last"), []).append((score.rows, score.last))
    results, chosen, gains = choose_ending(spec.task_obj, by_ending)
    return {
        "metric": metric,
        "endings": {
            f"{schedule}/{selection}": value for (schedule, selection), value in results.items()
        },
        "recommended": {"lr_schedule": chosen[0], "epoch_selection": chosen[1]},
        "gain_over_baseline": statistics.fmean(gains),
        "gain_se": statistics.stdev(gains) / math.sqrt(len(gains)) if len(gains) > 1 else 0.0,
        "baseline": f"{BASELINE[0]}/{BASELINE[1]}",
        "hparams": base.to_dict(),
        "excluded_test_seeds": list(seeds),
        "development_rows": dev_rows,
        "folds": folds,
        "repeats": repeats,
        "first_repeat": first_repeat,
        "rows_scored": sum(len(job.outer_rows) for job in folds_of_base),
        "seconds": round(time.monotonic() - started, 1),
    }


def run(
    models: list[str],
    seeds: list[int],
    folds: int,
    repeats: int,
    processes: int,
    say: Callable[[str], None] = print,
    overrides: dict[str, Any] | None = None,
    *,
    first_repeat: int,
) -> dict[str, dict[str, Any]]:
    """Study each model's registry defaults, or the defaults with `overrides` (a candidate
    recipe, judged on the same development rows before it may become a default). The defaults
    of processes and first_repeat are those of `raylife selection-study`
    (raylife_dev.cli.SelectionStudyOptions)."""
    report = {}
    for model in models:
        hparams = get_spec(model).defaults.replace(**overrides) if overrides else None
        say(f"  {model}: {folds}-fold x {repeats} on rows outside the test splits of seeds {seeds}")
        report[model] = entry = study_model(
            model, seeds, folds, repeats, processes, hparams, first_repeat
        )
        say(f"  {model}: {format_entry(entry)}")
    return report


def format_entry(entry: dict[str, Any]) -> str:
    better = "higher" if entry["metric"] == "accuracy" else "lower"
    endings = ", ".join(f"{name} {value:.4f}" for name, value in entry["endings"].items())
    chosen = entry["recommended"]
    return (
        f"{entry['metric']} ({better} is better): {endings} -> {chosen['lr_schedule']}/"
        f"{chosen['epoch_selection']}, {entry['gain_over_baseline']:+.4f} +/- {entry['gain_se']:.4f} "
        f"(SE) over {entry['baseline']} on {entry['rows_scored']} scored rows"
    )


def write_report(report: dict[str, dict[str, Any]], path: Path) -> Path:
    """Merge into the existing report: models studied separately (MNIST is slow) keep their entry."""
    existing = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**existing, **report}, indent=2) + "\n")
    return path
