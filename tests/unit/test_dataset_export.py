"""Embedded datasets written out as streaming inputs (`raylife quality --via stream`)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from raylife.catalog.lookup import get_spec
from raylife.config import DataConfig
from raylife.data.export import TARGET, _write_pngs, export_embedded
from raylife.data.sources import load_raw
from raylife.data.streaming import resolve, wants_streaming


@pytest.mark.parametrize("model", ["iris", "boston"])
def test_a_table_becomes_a_parquet_folder_with_every_row_once(tmp_path, model):
    spec = get_spec(model)
    raw = load_raw(spec, DataConfig())
    cfg = export_embedded(spec, tmp_path / model)
    assert cfg.target == TARGET and wants_streaming(cfg.source)
    assert resolve(cfg.source, flag="--data").format == "parquet"
    table = pq.read_table(cfg.source).sort_by("row_id")
    assert table.column("row_id").to_pylist() == list(range(len(raw.y)))
    assert table.column_names == ["row_id", *raw.feature_names, TARGET]
    np.testing.assert_array_equal(
        np.column_stack([table.column(n).to_numpy() for n in raw.feature_names]), raw.X
    )
    target = table.column(TARGET).to_pylist()
    if raw.label_names:  # the label's name, which the streaming path encodes as sorted strings
        assert target == [raw.label_names[c] for c in raw.y]
    else:
        np.testing.assert_allclose(target, raw.y)


def test_an_export_is_written_once_and_reused(tmp_path):
    spec = get_spec("iris")
    export_embedded(spec, tmp_path / "iris")
    part = next((tmp_path / "iris").glob("*.parquet"))
    written = part.stat().st_mtime_ns
    export_embedded(spec, tmp_path / "iris")
    assert part.stat().st_mtime_ns == written


def test_images_become_class_folders_of_pngs(tmp_path):
    from PIL import Image

    X = np.stack([np.full((1, 28, 28), 10.0 * i) for i in range(4)])
    _write_pngs(X, np.array([0, 1, 1, 2]), ["zero", "one", "two"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two", "zero"]
    assert len(list((tmp_path / "one").glob("*.png"))) == 2
    pixels = np.asarray(Image.open(tmp_path / "two" / "000003.png"))
    assert pixels.shape == (28, 28) and (pixels == 30).all()
    with pytest.raises(ValueError, match="8-bit"):
        _write_pngs(X / 7, np.zeros(4, dtype=np.int64), ["a"], tmp_path / "bad")
