"""Streaming data without Ray: hash splits, merged statistics, the driver-side checks of bad
input, and the synthetic table generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylife.data import streaming
from raylife.data.contracts import Preprocessing
from raylife.errors import RaylifeError
from raylife_dev.synth_table import make_table


def _codes(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    keys = streaming.row_keys({"row_id": ids}, ["row_id"])
    return streaming.split_codes(keys, seed, val_fraction=0.15, test_fraction=0.15)


def test_hash_split_is_reproducible_whatever_the_partitioning():
    ids = np.arange(100_000)
    whole = _codes(ids)
    in_parts = np.concatenate([_codes(part) for part in np.array_split(ids[::-1], 7)])[::-1]
    assert np.array_equal(whole, in_parts)
    assert not np.array_equal(whole, _codes(ids, seed=1))  # the seed chooses the split


def test_hash_split_fractions():
    shares = np.bincount(_codes(np.arange(200_000)), minlength=3) / 200_000
    assert shares == pytest.approx([0.70, 0.15, 0.15], abs=0.005)


def test_split_by_feature_values_and_paths_is_stable():
    X = {"a": np.array([1.0, 2.0, 1.0]), "b": np.array([3.0, 4.0, 3.0])}
    keys = streaming.row_keys(X, ["a", "b"])
    assert keys[0] == keys[2] and keys[0] != keys[1]  # equal rows, equal split: no leakage
    paths = {"path": np.array(["x/1.png", "x/2.png"], dtype=object)}
    path_keys = streaming.row_keys(paths, ["path"])
    assert path_keys[0] != path_keys[1]
    assert path_keys[0] == streaming.row_keys({"path": np.array(["x/1.png"])}, ["path"])[0]


def test_merged_moments_equal_numpy():
    rng = np.random.default_rng(0)
    X = rng.normal(50, 7, (10_001, 3)) * [1, 1e-3, 1e4]
    merged = streaming.Moments()
    for part in np.array_split(X, 13):
        merged = merged.merge(streaming.Moments.of(part))
    assert merged.count == len(X)
    np.testing.assert_allclose(merged.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std, X.std(axis=0), rtol=1e-9)


def _plan(**changes) -> streaming.Plan:
    base = dict(
        kind="tabular",
        features=["x0", "x1"],
        target="target",
        key_columns=["row_id"],
        seed=0,
        val_fraction=0.15,
        test_fraction=0.15,
        shape=[2],
        regression=False,
    )
    return streaming.Plan(**(base | changes))  # type: ignore[arg-type]


def _batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "row_id": np.arange(n),
        "x0": rng.normal(3, 2, n),
        "x1": rng.normal(-1, 5, n),
        "target": rng.choice(np.array(["b", "a", "c"]), n),
        "path": np.array(["part-0.parquet"] * n, dtype=object),
    }


def test_batch_statistics_are_the_train_split_statistics():
    plan = _plan()
    batches = [_batch(3000, seed) for seed in range(3)]
    for i, b in enumerate(batches):
        b["row_id"] = b["row_id"] + i * 3000
    stats = streaming.merge_stats(
        [str(streaming.batch_stats(b, plan)["summary"][0]) for b in batches]
    )
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    train = plan.codes(rows) == 0
    X = np.column_stack([rows["x0"], rows["x1"]])[train]
    pre = streaming.preprocessing_of(stats, plan)
    np.testing.assert_allclose(pre.mean, X.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(pre.std, X.std(axis=0), rtol=1e-9)
    assert stats.labels == ["a", "b", "c"] and sum(stats.splits) == 9000
    plan.labels, plan.preprocessing = stats.labels, pre
    codes = plan.target_codes(rows)
    assert np.array_equal(np.asarray(stats.labels)[codes], rows["target"])


def test_regression_target_statistics():
    plan = _plan(regression=True)
    batch = _batch(5000) | {"target": np.linspace(0, 100, 5000)}
    stats = streaming.merge_stats([str(streaming.batch_stats(batch, plan)["summary"][0])])
    pre = streaming.preprocessing_of(stats, plan)
    train = plan.codes(batch) == 0
    assert pre.target_mean == pytest.approx(batch["target"][train].mean())
    assert pre.target_std == pytest.approx(batch["target"][train].std())


def test_nan_rows_are_counted_with_their_file():
    batch = _batch(100)
    batch["x1"][7] = np.inf
    stats = streaming.merge_stats([str(streaming.batch_stats(batch, _plan())["summary"][0])])
    assert stats.bad_rows == 1 and stats.bad_file == "part-0.parquet"


def test_collate_applies_the_stored_preprocessing():
    from raylife.tasks import TASKS

    pre = Preprocessing("standardize", [3.0, -1.0], [2.0, 5.0])
    plan = _plan(labels=["a", "b", "c"], preprocessing=pre)
    batch = _batch(10)
    X, y = streaming.collate(batch, plan, TASKS["multiclass"])
    expected = pre.transform(np.column_stack([batch["x0"], batch["x1"]]))
    np.testing.assert_allclose(X.numpy(), expected)
    assert y.tolist() == ["abc".index(t) for t in batch["target"]]


# --------------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the fix, before Ray starts


def _table(folder: Path, name: str, **columns) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(pa.table(columns), path)
    return path


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(RaylifeError, match="not found"):
        streaming.resolve(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaylifeError, match="no files at"):
        streaming.resolve(str(tmp_path / "empty"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("x")
    with pytest.raises(RaylifeError, match="no Parquet, CSV or PNG files"):
        streaming.resolve(str(tmp_path / "text"))


def test_glob_and_folder_stream(tmp_path):
    _table(tmp_path / "t", "a.parquet", x=[1.0], target=[0])
    _table(tmp_path / "t", "b.parquet", x=[2.0], target=[1])
    assert streaming.wants_streaming(str(tmp_path / "t"))
    assert streaming.wants_streaming(str(tmp_path / "t" / "*.parquet"))
    assert not streaming.wants_streaming(str(tmp_path / "t" / "a.parquet"))  # small: in memory
    assert len(streaming.resolve(str(tmp_path / "t" / "*.parquet")).paths) == 2


def test_missing_target_mixed_schemas_non_numeric_and_corrupt_parts(tmp_path):
    good = {"x": [1.0, 2.0], "target": [0, 1]}
    _table(tmp_path / "a", "p0.parquet", **good)
    with pytest.raises(RaylifeError, match=r"target column 'label' not in .*p0.parquet"):
        streaming.check_tables(streaming.resolve(str(tmp_path / "a")), "label")

    _table(tmp_path / "b", "p0.parquet", **good)
    _table(tmp_path / "b", "p1.parquet", x=["1", "2"], target=[0, 1])
    with pytest.raises(RaylifeError, match=r"p1.parquet has columns .*same columns and types"):
        streaming.check_tables(streaming.resolve(str(tmp_path / "b")), "target")

    _table(tmp_path / "c", "p0.parquet", x=["a", "b"], target=[0, 1])
    with pytest.raises(RaylifeError, match=r"non-numeric feature column\(s\) \['x'\]"):
        streaming.check_tables(streaming.resolve(str(tmp_path / "c")), "target")

    _table(tmp_path / "d", "p0.parquet", **good)
    (tmp_path / "d" / "p1.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(RaylifeError, match=r"p1.parquet is not a readable parquet file"):
        streaming.check_tables(streaming.resolve(str(tmp_path / "d")), "target")


def test_images_of_the_wrong_size_are_rejected(tmp_path):
    from PIL import Image

    for label in ("0", "1"):
        (tmp_path / label).mkdir()
        Image.new("L", (28, 28)).save(tmp_path / label / "a.png")
    folder = streaming.check_images(streaming.resolve(str(tmp_path)))
    assert folder.labels == ["0", "1"] and folder.shape == [1, 28, 28]
    Image.new("L", (32, 28)).save(tmp_path / "1" / "b.png")
    with pytest.raises(RaylifeError, match=r"1/b.png is 32x28 pixels .*resize it or remove it"):
        streaming.check_images(streaming.resolve(str(tmp_path)))


# --------------------------------------------------------------------------------------------------
# make-table


def test_make_table_is_seeded_and_parted(tmp_path):
    info = make_table(str(tmp_path / "t"), rows=2500, features=3, seed=4, rows_per_part=1000)
    assert info.parts == 3 and info.bytes_in_memory == 2500 * 5 * 8
    table = pq.read_table(tmp_path / "t")
    assert table.num_rows == 2500 and table.column_names == ["row_id", "x0", "x1", "x2", "target"]
    assert sorted(table["row_id"].to_pylist()) == list(range(2500))
    assert set(table["target"].to_pylist()) == {0, 1, 2}
    again = make_table(str(tmp_path / "u"), rows=2500, features=3, seed=4, rows_per_part=1000)
    assert pq.read_table(again.path).equals(table)
    with pytest.raises(RaylifeError, match="already exists"):
        make_table(str(tmp_path / "t"), rows=10, features=3)
    with pytest.raises(RaylifeError, match="unknown task"):
        make_table(str(tmp_path / "v"), rows=10, features=3, task="ranking")
    assert not list(tmp_path.glob(".*partial"))  # nothing half-written left behind


def test_data_bench_checks_its_bounds():
    from raylife_dev.bench import data_bench

    setup = data_bench.setup_for(quick=True)
    assert setup.table_bytes >= 3 * setup.object_store_bytes
    full = data_bench.setup_for(quick=False)
    assert full.table_bytes >= 4 * 2**30 and full.throughput_rows == 1_000_000
    section = data_bench.Section("data", {})
    found = {
        "table_bytes": setup.table_bytes,
        "in_memory_bytes": 2 * setup.table_bytes,
        "driver_peak": 2**30,
        "worker_peak": 2 * 2**30,  # over the bound: the check must fail
        "ray_rows_s": [90.0],
        "plain_rows_s": [100.0],
        "ray_shuffled_rows_s": [70.0],
    }
    data_bench._fill(section, found, setup)
    met = {c.name: c.met for c in section.checks}
    assert met == {
        "table / object store": True,
        "peak RSS of any process (MiB)": False,
        "Ray Data / DataLoader rows/s": True,
    }
    assert section.ratio("ray data rows/s", "dataloader rows/s") == pytest.approx(0.9)


def test_a_declared_id_column_is_the_rows_identity_never_a_feature(tmp_path):
    _table(tmp_path / "t", "p0.parquet", customer=[7.0, 9.0], x=[1.0, 2.0], target=[0, 1])
    files = streaming.resolve(str(tmp_path / "t"))
    declared = streaming.check_tables(files, "target", "customer")
    assert (declared.features, declared.id_column) == (["x"], "customer")
    assert streaming.check_tables(files, "target").features == ["customer", "x"]  # undeclared
    with pytest.raises(RaylifeError, match=r"id column 'client' not in .*p0.parquet; columns are"):
        streaming.check_tables(files, "target", "client")
