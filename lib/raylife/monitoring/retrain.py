"""`raylife retrain MODEL`: a new version from the model's data plus the traffic it has seen.

The steps, each a function below:
1. why: with --when-drifted, the monitor's latest report of the promoted version must say drift
   (`drift: PSI 0.31 on carat`); otherwise nothing happens.
2. the table: the champion's own training and validation rows (its test split stays out, so it
   can still judge) plus the captured rows that have feedback, minus a seeded holdout of those
   (`RECENT_HOLDOUT`) that neither side trains on; written under `<store>/<model>/retrain/`.
3. the sweep: the declaration's search on that table (the caller runs it: raylife.lifecycle).
4. the verdict (`judge`): the candidate must beat the champion on the recent holdout, by a paired
   test at 99% one-sided, AND stay within the promotion gate's tolerance on the champion's
   original test split. A candidate that fails changes nothing but a `refuse` history entry.
5. the rollout: the caller starts a canary through the existing gates (raylife.serve.canary).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from raylife import storage
from raylife.catalog.specs import ModelSpec
from raylife.config import DataConfig
from raylife.data.contracts import split
from raylife.data.sources import load_raw
from raylife.errors import RaylifeError
from raylife.lifecycle import history
from raylife.lifecycle.artifact import Artifact
from raylife.lifecycle.captures import read_captures, read_feedback
from raylife.lifecycle.evaluate import answers, evaluate_artifact, test_data_for
from raylife.lifecycle.store import ModelStore
from raylife.monitoring.monitor import MONITOR_DIR, report_folder
from raylife.tasks import TASKS

RETRAIN_DIR = "retrain"
RECENT_HOLDOUT = 0.3
"""Share of the labelled captured rows kept out of training to judge the candidate on."""
MIN_RECENT = 30
"""Labelled captured rows the recent holdout needs (fewer: no paired test can decide)."""
BETTER_Z = 2.326
"""99% one-sided: the candidate's mean gain on the recent rows must exceed this many standard
errors of the paired differences."""


def drift_reason(store: ModelStore, model: str, version: str) -> str:
    """The latest window's drift reason for `version` ("" when its latest window did not drift);
    RaylifeError when the monitor never judged it."""
    folder = store.root.joined(report_folder(model, version))
    reports = [path for path, _ in storage.list_files(folder) if path.endswith(".json")]
    if not reports:
        raise RaylifeError(
            f"{model} {version} has no monitor report in {store.uri}/{model}/{MONITOR_DIR}; run "
            f"`raylife monitor {model}` first, or retrain without --when-drifted"
        )
    latest = json.loads(storage.read_bytes(folder.child(sorted(reports)[-1])))
    return str(latest.get("reason", ""))


@dataclass
class Table:
    """The retraining table and what was kept out of it."""

    uri: str
    target: str
    rows: int
    captured: int
    """Labelled captured rows in the table."""
    recent_X: np.ndarray
    recent_y: list[Any]
    """The labelled captured rows kept out: labels (classification) or values."""


def labelled_captures(store: ModelStore, model: str) -> tuple[np.ndarray, list[Any]]:
    """(inputs, truths) of every captured row that has feedback, in capture order."""
    truths: dict[tuple[str, int], Any] = {}
    feedback = read_feedback(store.uri, model)
    for rid, row, label, value in zip(
        *(feedback[c].to_pylist() for c in ("request_id", "row", "label", "value")), strict=True
    ):
        truths[(rid, row)] = label if label is not None else value
    captures = read_captures(store.uri, model)
    X, y = [], []
    for rid, row, inputs in zip(
        *(captures[c].to_pylist() for c in ("request_id", "row", "inputs")), strict=True
    ):
        if (rid, row) in truths:
            X.append(inputs)
            y.append(truths.pop((rid, row)))  # a row captured twice (a retry) counts once
    return np.asarray(X, dtype=np.float64), y


def build_table(store: ModelStore, spec: ModelSpec, champion: Artifact, seed: int = 0) -> Table:
    """The champion's training and validation rows plus the labelled captures, minus the recent
    holdout, as one Parquet table in the store (workers and RayJobs read it from there)."""
    if spec.input_kind != "tabular":
        raise RaylifeError(f"retrain takes table models; {spec.name} takes images (not yet)")
    X_new, y_new = labelled_captures(store, spec.name)
    if len(y_new) < MIN_RECENT / RECENT_HOLDOUT:
        raise RaylifeError(
            f"{spec.name}: {len(y_new)} captured rows have feedback; retraining needs "
            f"{math.ceil(MIN_RECENT / RECENT_HOLDOUT)} (POST /{spec.name}/feedback with capture on)"
        )
    order = np.random.default_rng(seed).permutation(len(y_new))
    cut = max(MIN_RECENT, round(RECENT_HOLDOUT * len(y_new)))
    recent, kept = order[:cut], order[cut:]
    cfg = spec.data_config(DataConfig(**champion.run.get("data_config", {})))
    raw = load_raw(spec, cfg)
    train, val, _ = split(raw, cfg, stratify=spec.task != "regression")
    names = raw.label_names
    base_y = [names[int(c)] for c in np.concatenate([train.y, val.y])] if names else None
    target = cfg.target or spec.data.target or "target"
    frame = _frame(
        np.concatenate([train.X, val.X, X_new[kept]]),
        (base_y + [y_new[i] for i in kept])
        if base_y is not None
        else np.concatenate([train.y, val.y, [y_new[i] for i in kept]]),
        raw.feature_names,
        target,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    rel = f"{spec.name}/{RETRAIN_DIR}/{stamp}/table.parquet"
    storage.write_bytes(store.root, rel, _parquet(frame))
    return Table(
        store.root.uri_of(store.root.at(rel)),
        target,
        len(frame),
        len(kept),
        X_new[recent],
        [y_new[i] for i in recent],
    )


def _frame(X: np.ndarray, y: Any, names: list[str], target: str) -> Any:
    import pandas as pd  # lazy: pandas is heavy and only this path needs it

    frame = pd.DataFrame(X, columns=names)
    frame[target] = list(y)
    return frame


def _parquet(frame: Any) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@dataclass
class Verdict:
    better: bool
    line: str
    figures: dict[str, float]


def judge(spec: ModelSpec, candidate: Artifact, champion: Artifact, table: Table) -> Verdict:
    """Better on the recent holdout (paired, significant) and within the gate on the champion's
    original test split."""
    task = TASKS[champion.task]
    mine = _scores(task.is_classification, answers(candidate, table.recent_X), table.recent_y)
    theirs = _scores(task.is_classification, answers(champion, table.recent_X), table.recent_y)
    gain = mine - theirs  # per row: correct (1/0) or minus the squared error
    spread = float(gain.std(ddof=1)) / math.sqrt(len(gain)) if len(gain) > 1 else 0.0
    z = float(gain.mean()) / spread if spread > 0 else (math.inf if gain.mean() > 0 else 0.0)
    original = test_data_for(champion)
    ours = evaluate_artifact(candidate, original)[f"test_{task.metric}"]
    reference = champion.metrics.get(f"test_{task.metric}")
    if reference is None:
        reference = evaluate_artifact(champion, original)[f"test_{task.metric}"]
    bar = task.worst_acceptable(reference, spec.gate.absolute, spec.gate.relative)
    within = task.meets(ours, bar)
    recent_metric = "accuracy" if task.is_classification else "rmse"
    figures = {
        f"recent_{recent_metric}_candidate": _metric(task.is_classification, mine),
        f"recent_{recent_metric}_champion": _metric(task.is_classification, theirs),
        "recent_rows": float(len(gain)),
        "recent_gain_z": z,
        f"original_test_{task.metric}_candidate": ours,
        f"original_test_{task.metric}_champion": reference,
    }
    recent = (
        f"on {len(gain)} recent rows {recent_metric} {figures[f'recent_{recent_metric}_candidate']:.4g} "
        f"vs champion {figures[f'recent_{recent_metric}_champion']:.4g} (z {z:.1f})"
    )
    kept = f"original test {task.metric} {ours:.4g} vs {reference:.4g} (bar {bar:.4g})"
    if z < BETTER_Z:
        return Verdict(False, f"not significantly better {recent} (needs z >= {BETTER_Z})", figures)
    if not within:
        return Verdict(False, f"worse beyond the gate: {kept}", figures)
    return Verdict(True, f"better {recent}; {kept}", figures)


def _scores(classification: bool, given: Any, truths: list[Any]) -> np.ndarray:
    if classification:
        return np.asarray([float(a == t) for a, t in zip(given, truths, strict=True)])
    return -((np.asarray(given, np.float64) - np.asarray(truths, np.float64)) ** 2)


def _metric(classification: bool, scores: np.ndarray) -> float:
    return float(scores.mean()) if classification else float(math.sqrt(-scores.mean()))


def record_refusal(
    store: ModelStore,
    model: str,
    champion: str,
    candidate: str,
    reason: str,
    figures: dict[str, float],
) -> None:
    """A retrain that does not beat the champion changes nothing but this history entry."""
    with store.promotion_lock(model):
        entries = history.read(store, model)
        pointer = store.pointer(model)
        entry = history.new_entry(
            action="refuse",
            from_version=champion,
            to_version=candidate,
            from_metrics={},
            to_metrics={},
            forced=False,
            source_run={"source": "retrain"},
            reason=reason,
            generation=pointer.generation if pointer else None,
            extra={"retrain": figures},
        )
        history.append(store, model, entries, entry)
