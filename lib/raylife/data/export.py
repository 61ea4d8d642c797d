"""An embedded dataset written out as files that stream (`raylife quality --via stream`).

The streaming path (raylife.data.streaming) takes folders, so the tutorial's datasets can be trained
through it and their quality compared with the in-memory path's: tables become a folder of Parquet
parts (`row_id`, the features, `target`: the label's name, or the value for regression), images a
folder of class folders of 8-bit PNGs, as a user's data would arrive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raylife.catalog.specs import ModelSpec
from raylife.config import DataConfig
from raylife.data.sources import load_raw

TARGET = "target"
PARTS = 2
"""More than one part: a folder, as large tables arrive."""


def export_embedded(spec: ModelSpec, folder: Path) -> DataConfig:
    """Write spec's embedded dataset under folder (once; reused when complete) and return the
    DataConfig that trains from it through the streaming path."""
    done = folder / "_COMPLETE"
    raw = load_raw(spec, DataConfig())
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        if raw.input_kind == "image":
            _write_pngs(raw.X, raw.y, raw.label_names or [], folder)
        else:
            _write_parquet(raw.X, raw.y, raw.feature_names, raw.label_names, folder)
        done.write_text("")
    target = None if raw.input_kind == "image" else TARGET
    return DataConfig(source=str(folder), target=target)


def _write_parquet(
    X: np.ndarray, y: np.ndarray, names: list[str], labels: list[str] | None, folder: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = np.asarray(labels, dtype=object)[y] if labels else y.astype(np.float64)
    for part, rows in enumerate(np.array_split(np.arange(len(y)), PARTS)):
        columns = {"row_id": pa.array(rows, pa.int64())}
        columns |= {name: pa.array(X[rows, j]) for j, name in enumerate(names)}
        columns[TARGET] = pa.array(target[rows])
        pq.write_table(pa.table(columns), folder / f"part-{part:03d}.parquet")


def _write_pngs(X: np.ndarray, y: np.ndarray, labels: list[str], folder: Path) -> None:
    from PIL import Image

    if X.min() < 0 or X.max() > 255 or not np.array_equal(X, np.round(X)):
        raise ValueError("images must hold 8-bit pixel values (0..255) to be written as PNGs")
    for index, (image, code) in enumerate(zip(X, y, strict=True)):
        label_folder = folder / labels[int(code)]
        label_folder.mkdir(exist_ok=True)
        Image.fromarray(image.reshape(image.shape[-2:]).astype(np.uint8)).save(
            label_folder / f"{index:06d}.png"
        )
