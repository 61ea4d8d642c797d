import gzip
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raylife.catalog.lookup import get_spec
from raylife.config import DataConfig
from raylife.data import sources
from raylife.data.contracts import InputSchema, RawData, split, validate_rows
from raylife.data.prepare import prepare
from raylife.data.sources import load_table, load_torchvision_mnist
from raylife.errors import InputError, RaylifeError

from ..conftest import prepared


@pytest.mark.parametrize(
    ("model", "rows", "shape", "labels"),
    [
        ("ionosphere", 351, [33], ["b", "g"]),
        ("iris", 150, [4], ["setosa", "versicolor", "virginica"]),
        ("boston", 506, [13], None),
        ("mnist", 5000, [1, 28, 28], [str(d) for d in range(10)]),
    ],
)
def test_embedded_sources_split_70_15_15(model, rows, shape, labels):
    data = prepared(model)
    sizes = data.provenance["rows"]
    assert sum(sizes.values()) == rows
    assert abs(sizes["test"] - 0.15 * rows) <= 1 and abs(sizes["val"] - 0.15 * rows) <= 1
    assert data.schema.shape == shape and data.label_names == labels
    assert data.train.X.dtype == np.float32


def test_ionosphere_is_the_uci_data_without_the_constant_column():
    data = prepared("ionosphere")
    assert (
        data.schema.feature_names[:3] == ["a01", "a03", "a04"]
        and len(data.schema.feature_names) == 33
    )
    spec = get_spec("ionosphere")
    raw = sources.EMBEDDED[spec.data.embedded]()
    assert int(raw.y.sum()) == 225  # 225 good returns, 126 bad


def test_splits_are_seeded_stratified_and_disjoint():
    spec = get_spec("iris")
    first, again, other = (prepare(spec, DataConfig(seed=s)) for s in (0, 0, 1))
    np.testing.assert_array_equal(first.test_raw.X, again.test_raw.X)
    assert not np.array_equal(first.test_raw.X, other.test_raw.X)
    assert sorted(np.bincount(first.test_raw.y)) == [7, 8, 8]  # stratified: 23 rows over 3 classes


def test_splits_partition_the_rows():
    ids = np.arange(200, dtype=np.float64)
    raw = RawData(
        ids[:, None], (ids % 2).astype(np.int64), ["id"], ["a", "b"], "tabular", "synthetic"
    )
    train, val, test = split(raw, DataConfig(seed=3), stratify=True)
    parts = [set(p.X[:, 0].tolist()) for p in (train, val, test)]
    assert sum(map(len, parts)) == 200 and set.union(*parts) == set(ids.tolist())
    assert abs(len(train) - 140) <= 1 and abs(len(val) - 30) <= 1 and len(test) == 30
    assert np.bincount(test.y).tolist() == [15, 15]


def test_preprocessing_is_fitted_on_train_only():
    data = prepared("boston")
    assert np.allclose(data.train.X.mean(axis=0), 0, atol=1e-5)
    assert not np.allclose(data.test.X.mean(axis=0), 0, atol=1e-3)
    assert data.preprocessing.target_std and abs(float(data.train.y.mean())) < 1e-6


def test_mnist_is_normalised_and_shuffled_across_splits():
    data = prepared("mnist")
    assert data.preprocessing.kind == "normalize_image"
    assert abs(float(data.train.X.mean())) < 1e-3
    assert len(set(data.test_raw.y.tolist())) == 10  # the embedded sample is sorted by label


def _write_table(tmp_path: Path, frame: pd.DataFrame, kind: str) -> Path:
    path = tmp_path / f"table.{kind}"
    frame.to_csv(path, index=False) if kind == "csv" else frame.to_parquet(path)
    return path


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_user_table_from_local_file(tmp_path, kind):
    frame = pd.DataFrame({"x1": np.arange(40.0), "x2": np.arange(40.0) % 3, "y": ["a", "b"] * 20})
    raw = load_table(str(_write_table(tmp_path, frame, kind)), "y", "binary")
    assert (
        raw.X.shape == (40, 2)
        and raw.label_names == ["a", "b"]
        and raw.feature_names == ["x1", "x2"]
    )


def test_user_table_over_http(tmp_path):
    frame = pd.DataFrame({"x": np.arange(30.0), "target": np.arange(30.0) * 2})
    _write_table(tmp_path, frame, "csv")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/table.csv"
        raw = load_table(url, "target", "regression")
    finally:
        server.shutdown()
    assert raw.X.shape == (30, 1) and raw.y[3] == 6.0


def test_table_errors_name_problem_and_fix(tmp_path):
    with pytest.raises(RaylifeError, match="not found; pass an existing CSV"):
        load_table(str(tmp_path / "missing.csv"), "y", "binary")
    path = _write_table(tmp_path, pd.DataFrame({"a": [1.0, 2.0], "b": [0, 1]}), "csv")
    with pytest.raises(RaylifeError, match="target column 'label' not in .*columns are: a, b"):
        load_table(str(path), "label", "binary")
    with pytest.raises(RaylifeError, match="needs its target column"):
        load_table(str(path), None, "binary")
    nan_path = _write_table(
        tmp_path, pd.DataFrame({"a": [1.0, np.nan, np.inf], "y": [0, 1, 0]}), "csv"
    )
    with pytest.raises(RaylifeError, match="2 row\\(s\\) .* NaN/inf"):
        load_table(str(nan_path), "y", "binary")
    text_path = tmp_path / "text.csv"
    text_path.write_text("a,y\nx,1\nz,0\n")
    with pytest.raises(RaylifeError, match="non-numeric feature column"):
        load_table(str(text_path), "y", "binary")
    with pytest.raises(RaylifeError, match="is a directory"):
        load_table(str(tmp_path), "y", "binary")


def test_table_source_trains_a_tabular_spec(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["p", "q", "r"])
    frame["kind"] = np.where(frame["p"] > 0, "up", "down")
    path = _write_table(tmp_path, frame, "csv")
    data = prepare(get_spec("ionosphere"), DataConfig(source=str(path), target="kind"))
    assert data.schema.feature_names == ["p", "q", "r"] and data.label_names == ["down", "up"]
    with pytest.raises(RaylifeError, match="takes images"):
        prepare(get_spec("mnist"), DataConfig(source=str(path), target="kind"))


def _write_idx(folder: Path, name: str, array: np.ndarray) -> None:
    """IDX format as in the MNIST distribution: magic (dtype 0x08 = ubyte, ndim), sizes, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(folder / f"{name}.gz", "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())
    (folder / name).write_bytes(header + array.astype(np.uint8).tobytes())


def test_full_mnist_through_torchvision_offline(tmp_path):
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 100), ("t10k", 20)):
        _write_idx(raw_dir, f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        _write_idx(raw_dir, f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    raw = load_torchvision_mnist(str(tmp_path), download=False)
    assert (
        raw.X.shape == (100, 1, 28, 28)
        and raw.X_test is not None
        and raw.X_test.shape == (20, 1, 28, 28)
    )
    data = prepare(get_spec("mnist"), DataConfig(source="torchvision", data_dir=str(tmp_path)))
    assert data.provenance["rows"] == {"train": 85, "val": 15, "test": 20}


def test_full_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(RaylifeError, match="--download"):
        load_torchvision_mnist(str(tmp_path), download=False)
    with pytest.raises(RaylifeError, match="--data-dir"):
        load_torchvision_mnist(None, download=False)


SCHEMA = InputSchema(kind="tabular", feature_names=["a", "b"], shape=[2])


def test_validate_rows_accepts_lists_dicts_and_single_rows():
    assert validate_rows([[1, 2], [3, 4]], SCHEMA).shape == (2, 2)
    assert validate_rows([1, 2], SCHEMA).shape == (1, 2)
    assert validate_rows({"b": 2, "a": 1}, SCHEMA).tolist() == [[1.0, 2.0]]
    image = InputSchema(kind="image", feature_names=[], shape=[1, 28, 28])
    assert validate_rows([[[0] * 28] * 28], image).shape == (1, 1, 28, 28)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1, 2, 3]], "got 3 values, the model takes 2"),
        ([[1, "x"]], "'x' is not a finite number"),
        ([[1, float("nan")]], "nan is not a finite number"),
        ([[1, True]], "True is not a finite number"),
        ({"a": 1, "c": 2}, "missing fields \\['b'\\] / unknown fields \\['c'\\]"),
        ([], "non-empty list"),
        ("text", "non-empty list"),
    ],
)
def test_validate_rows_errors(rows, message):
    with pytest.raises(InputError, match=message):
        validate_rows(rows, SCHEMA)
