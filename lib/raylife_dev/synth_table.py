"""`raylife make-table`: a seeded synthetic table of any size, written as Parquet parts.

Tests and the bench generate their large tables with this, so nothing large is committed. Every
part is drawn from its own generator seeded by (seed, part index): the rows do not depend on how
many parts were written before, and memory stays at one part whatever the table's size.

Columns: `row_id` (int64, 0..rows-1), `x0`..`x{F-1}` (float32, each with its own offset and scale so
standardisation matters) and `target`: a class code (int64) drawn from a noisy linear model for
`multiclass`/`binary`, a float64 for `regression`.
"""

from __future__ import annotations

import math
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raylife.errors import RaylifeError

TASKS = ("multiclass", "binary", "regression")
TARGET = "target"
ID_COLUMN = "row_id"


@dataclass(frozen=True)
class TableInfo:
    """What make_table wrote."""

    path: str
    rows: int
    features: int
    task: str
    parts: int
    bytes_on_disk: int
    bytes_in_memory: int
    """The table as the in-memory path holds it: float64 features and target, int64 ids."""


def feature_names(features: int) -> list[str]:
    return [f"x{i}" for i in range(features)]


def in_memory_bytes(rows: int, features: int) -> int:
    """Bytes of the table as a float64 numpy matrix plus target and id (what `load_table` holds)."""
    return rows * (features + 2) * 8


def make_table(
    path: str,
    rows: int,
    features: int,
    task: str = "multiclass",
    seed: int = 0,
    rows_per_part: int = 100_000,
    classes: int = 3,
) -> TableInfo:
    """Write `rows` rows as Parquet parts into the new folder `path` (written aside, then renamed,
    so a half-written table never looks complete)."""
    _check_args(rows, features, task, rows_per_part, classes)
    final = Path(path).expanduser()
    if final.exists() and any(final.iterdir() if final.is_dir() else [final]):
        raise RaylifeError(f"{path} already exists; pass a new folder or delete it first")
    staging = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir(parents=True)
    try:
        weights = _weights(seed, features, task, classes)
        parts = math.ceil(rows / rows_per_part)
        for part in range(parts):
            start = part * rows_per_part
            count = min(rows_per_part, rows - start)
            _write_part(
                staging / f"part-{part:05d}.parquet", seed, part, start, count, weights, task
            )
        if final.exists():
            final.rmdir()  # the empty folder the caller made
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    on_disk = sum(p.stat().st_size for p in final.glob("*.parquet"))
    return TableInfo(
        str(final), rows, features, task, parts, on_disk, in_memory_bytes(rows, features)
    )


def _check_args(rows: int, features: int, task: str, rows_per_part: int, classes: int) -> None:
    if task not in TASKS:
        raise RaylifeError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if rows < 1 or features < 1 or rows_per_part < 1:
        raise RaylifeError("--rows, --features and --rows-per-part must be positive integers")
    if task == "multiclass" and classes < 2:
        raise RaylifeError("--classes must be 2 or more for a multiclass table")


@dataclass(frozen=True)
class _Weights:
    offset: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    """(features, outputs): one column per class, or one for binary and regression."""


def _weights(seed: int, features: int, task: str, classes: int) -> _Weights:
    rng = np.random.default_rng([seed, 2**31])
    outputs = classes if task == "multiclass" else 1
    return _Weights(
        offset=rng.uniform(-50, 50, features),
        scale=rng.uniform(0.5, 20, features),
        coef=rng.normal(0, 1, (features, outputs)) / math.sqrt(features),
    )


def _write_part(
    file: Path, seed: int, part: int, start: int, count: int, w: _Weights, task: str
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng([seed, part])
    z = rng.standard_normal((count, len(w.offset)), dtype=np.float32)
    signal = z @ w.coef.astype(np.float32)
    x = (z * w.scale + w.offset).astype(np.float32)
    columns = {ID_COLUMN: pa.array(np.arange(start, start + count, dtype=np.int64))}
    columns.update({name: pa.array(x[:, i]) for i, name in enumerate(feature_names(x.shape[1]))})
    columns[TARGET] = pa.array(_target(signal, task, rng))
    pq.write_table(pa.table(columns), file)


def _target(signal: np.ndarray, task: str, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(signal.shape, dtype=np.float32) * 0.3
    if task == "regression":
        return (signal[:, 0] * 10 + noise[:, 0] * 10).astype(np.float64)
    if task == "binary":
        return (signal[:, 0] + noise[:, 0] > 0).astype(np.int64)
    return np.argmax(signal + noise, axis=1).astype(np.int64)
