"""What one `ray.train.report` (with its checkpoint) costs: the same run with a report every epoch
vs raylife's sparse reporting, alternated (A B A B ...) so machine noise hits both alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from raylife.catalog.lookup import get_spec
from raylife.config import TrainConfig
from raylife.data.prepare import prepare
from raylife.settings import Settings
from raylife.tasks import Task
from raylife.training.train import build_trainer, checkpoint_train_state, new_run_name, storage_path


def report_cost(
    model: str, settings: Settings, repeats: int, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """`repeats` alternations of the two runs (its default: raylife_dev.cli.ReportCostOptions)."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import ray

    from raylife.cluster import ensure_ray

    spec = get_spec(model)
    base = TrainConfig(model=model, hparams=spec.defaults)
    data = prepare(spec, base.data)
    ensure_ray(num_cpus=base.num_workers * base.cpus_per_worker)
    data_ref = ray.put(data)
    runs: dict[float, list[tuple[float, int]]] = {0.0: [], base.report_interval_s: []}
    for _ in range(repeats):
        for interval in runs:
            cfg = base.replace(report_interval_s=interval)
            started = time.monotonic()
            result = build_trainer(
                cfg, data_ref, storage_path(settings), new_run_name(model, "measure")
            ).fit()
            wall = time.monotonic() - started
            history = checkpoint_train_state(result.checkpoint)["history"]
            reports = len(history) if interval == 0 else _sparse_reports(history, spec.task_obj)
            runs[interval].append((wall, reports))
            say(f"  report interval {interval:g}s: fit {wall:.2f}s, {reports} reports")
    every, sparse = (runs[k] for k in runs)
    wall_every, wall_sparse = (statistics.median(w for w, _ in r) for r in (every, sparse))
    extra = every[0][1] - sparse[0][1]
    return {
        "model": model,
        "epochs": spec.defaults.epochs,
        "fit_s_every_epoch": wall_every,
        "fit_s_sparse": wall_sparse,
        "reports_every_epoch": every[0][1],
        "reports_sparse_at_least": sparse[0][1],
        "seconds_per_report": (wall_every - wall_sparse) / max(extra, 1),
    }


def _sparse_reports(history: list[dict[str, float]], task: Task) -> int:
    """Improved epochs + the last one (interval-triggered reports are not counted: a lower bound,
    which makes the per-report figure an upper bound)."""
    best, count = None, 0
    for row in history:
        value = row["val_objective"]
        if task.is_better(value, best):
            best, count = value, count + 1
    return count + 1
