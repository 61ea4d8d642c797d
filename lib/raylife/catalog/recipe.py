"""A training recipe for a table nobody tuned, scaled to its rows and features.

Standardised inputs (every table run does that), an MLP two layers deep and about twice as wide
as the features, a batch of about 1/40 of the training rows, epochs for about STEPS optimizer
steps, a cosine learning-rate decay, dropout where the rows are few, and the epoch with the best
validation score (the validation split ends the run, not the epoch count). The search space
brackets the recipe: learning rate, width and depth, dropout. `docs/performance.md` reports how
this recipe does against scikit-learn's strong baselines (`raylife recipe-study`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from raylife.catalog.specs import ModelSpec

TRAIN_SHARE = 0.7
"""Rows left for training by the default validation and test fractions (0.15 each)."""
STEPS = 3000
"""Optimizer steps a run aims at (bounded by MIN_EPOCHS and MAX_EPOCHS)."""
MIN_EPOCHS, MAX_EPOCHS = 30, 300


@dataclass(frozen=True)
class Recipe:
    hyperparameters: dict[str, Any]
    debug: dict[str, Any]
    search: dict[str, Any]
    gate: dict[str, float]


def table_shape(spec: ModelSpec) -> tuple[int, int]:
    """(rows, features) of a model's declared table: a file is read, a folder or glob counted
    from its Parquet footers (the streaming path's own checks name a bad part)."""
    # lazy: the data readers (pandas, pyarrow) load only for a declaration without a recipe
    from raylife.config import DataConfig
    from raylife.data import sources, streaming

    if spec.data.embedded is not None:
        raw = sources.EMBEDDED[spec.data.embedded]()
        return len(raw.X), int(np.prod(raw.X.shape[1:]))
    cfg = spec.data_config(DataConfig())
    if not streaming.wants_streaming(cfg.source):
        raw = sources.load_table(cfg.source, cfg.target, spec.task, spec.data.id_column)
        return len(raw.X), raw.X.shape[1]
    import pyarrow.dataset as ds

    files = streaming.resolve(cfg.source)
    table = streaming.check_tables(files, cfg.target, spec.data.id_column)
    rows = ds.dataset(files.paths, filesystem=files.filesystem, format=files.format).count_rows()
    return rows, len(table.features)


def _pow2(value: float, low: int, high: int) -> int:
    return int(min(high, max(low, 2 ** round(math.log2(max(value, 1))))))


def for_table(rows: int, features: int, task: str) -> Recipe:
    train_rows = max(1, int(rows * TRAIN_SHARE))
    width = _pow2(2 * features, 32, 128 if train_rows < 500 else 256)
    batch = _pow2(train_rows / 40, 16, 256)
    epochs = int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEPS * batch / train_rows))))
    dropout = 0.2 if train_rows < 2000 else 0.1
    hyperparameters = {
        "lr": 3e-3,
        "batch_size": batch,
        "epochs": epochs,
        "hidden_sizes": [width, width // 2],
        "dropout": dropout,
        "weight_decay": 1e-4,
        "lr_schedule": "cosine",
        "epoch_selection": "best",
    }
    search = {
        "lr": {"loguniform": [1e-3, 1e-2]},
        "hidden_sizes": {"choice": [[width // 2], [width, width // 2], [2 * width, width]]},
        "dropout": {"choice": [0.0, 0.1, 0.3]},
    }
    test_rows = max(1, int(rows * (1 - TRAIN_SHARE) / 2))
    if task == "regression":
        gate = {"relative": 0.05}
    else:  # two test rows' worth of accuracy is noise on a small test split
        gate = {"absolute": round(min(0.05, max(0.005, 2 / test_rows)), 4)}
    debug = {"lr": 1e-2, "batch_size": 32, "epochs": 2, "hidden_sizes": [8]}
    return Recipe(hyperparameters, debug, search, gate)
