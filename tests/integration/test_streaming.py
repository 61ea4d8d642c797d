"""Training that streams through Ray Data on the session cluster: a multi-part Parquet folder,
the same kind of table on s3:// (moto), and a folder of PNG class folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from raylife.catalog.lookup import get_spec
from raylife.cli import main
from raylife.config import DataConfig
from raylife.data import streaming
from raylife.data.prepare import prepare
from raylife.lifecycle.store import ModelStore
from raylife.tasks import TASKS
from raylife_dev.synth_table import make_table
from tests.unit.test_s3 import BUCKET, s3  # noqa: F401 (the moto server fixture)

TRAIN = "train --model {model} --preset debug --num-workers {workers}"


def _latest(home: Path, model: str) -> dict:
    store = ModelStore(str(home / "store"))
    return store.metadata(model, store.versions(model)[-1])


def _train_and_read(
    home: Path, data: str, model: str = "iris", target: str | None = "target", workers: int = 2
) -> dict:
    # One epoch: the path under test is the ingest (shards, statistics), not the optimisation.
    args = [*TRAIN.format(model=model, workers=workers).split(), "--epochs", "1", "--data", data]
    assert main(args + (["--target", target] if target else [])) == 0
    return _latest(home, model)


def test_train_from_a_multi_part_parquet_folder(home, tmp_path):
    make_table(str(tmp_path / "t"), rows=3000, features=4, seed=3, rows_per_part=1000)
    meta = _train_and_read(home, str(tmp_path / "t"))
    assert meta["data"]["streamed"] and meta["data"]["files"] == 3
    rows = meta["data"]["rows"]
    assert sum(rows.values()) == 3000 and 0.6 < rows["train"] / 3000 < 0.8
    assert meta["label_names"] == ["0", "1", "2"]
    # the stored statistics are those of the training rows, computed without collecting them
    batch = {k: np.asarray(v) for k, v in pq.read_table(tmp_path / "t").to_pydict().items()}
    codes = streaming.split_codes(streaming.row_keys(batch, ["row_id"]), 0, 0.15, 0.15)
    X = np.column_stack([batch[f"x{i}"] for i in range(4)])[codes == 0]
    np.testing.assert_allclose(meta["preprocessing"]["mean"], X.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(meta["preprocessing"]["std"], X.std(axis=0), rtol=1e-6)
    assert meta["metrics"]["test_accuracy"] > 0.5  # 3 classes: chance is ~0.33


def test_stream_from_s3(tmp_path, s3):  # noqa: F811
    """The s3-specific part: Ray Data tasks read the parts (statistics, batches) from S3; the
    training on top is the folder test's."""
    filesystem, query = s3
    for part in range(2):
        source = Path(make_table(str(tmp_path / f"p{part}"), 1000, 4, seed=part).path)
        _upload(filesystem, next(source.glob("*.parquet")), f"{BUCKET}/t/part-{part}.parquet")
    cfg = DataConfig(source=f"s3://{BUCKET}/t?{query}", target="target")
    data = prepare(get_spec("iris"), cfg)
    assert data.stream is not None and data.provenance["files"] == 2
    assert sum(data.provenance["rows"].values()) == 2000
    batches = data.stream.batches(
        data.stream.datasets["train"], 64, TASKS["multiclass"], torch.device("cpu"), 0, True
    )
    seen = sum(len(y) for _, y in batches)
    assert seen == data.provenance["rows"]["train"]


def _upload(filesystem, source: Path, key: str) -> None:
    with filesystem.open_output_stream(key) as out:
        out.write(source.read_bytes())


def test_train_from_a_png_folder(home, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for digit in range(3):  # three classes of 16x16 images that differ in brightness
        (tmp_path / "png" / str(digit)).mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 60, (16, 16)) + 80 * digit
            Image.fromarray(pixels.astype(np.uint8)).save(
                tmp_path / "png" / str(digit) / f"{i}.png"
            )
    meta = _train_and_read(home, str(tmp_path / "png"), model="mnist", target=None, workers=1)
    assert meta["label_names"] == ["0", "1", "2"] and meta["schema"]["shape"] == [1, 16, 16]
    assert meta["preprocessing"]["kind"] == "normalize_image"
    Image.new("L", (28, 28)).save(tmp_path / "png" / "1" / "odd.png")
    args = [*TRAIN.format(model="mnist", workers=1).split(), "--data", str(tmp_path / "png")]
    assert main(args) == 2  # the odd image is named before any worker starts
