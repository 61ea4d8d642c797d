"""Batch inference without Ray: planning and bad inputs, the actors' scoring (the Scorer class
called in-process), the output schema, and the atomic publish with its completion marker."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raylife import storage
from raylife.errors import InputError, RaylifeError
from raylife.inference import batch_predict as bp
from raylife.inference.predict import Predictor
from raylife.lifecycle.store import COMPLETE_MARKER, ModelStore

from ..conftest import prepared, quick_artifact


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(str(tmp_path_factory.mktemp("store")))
    for model, epochs in (("iris", 1), ("boston", 1), ("mnist", 0)):
        store.promote(model, store.register(quick_artifact(model, epochs=epochs)))
    return store


def features(model: str) -> tuple[np.ndarray, list[str]]:
    data = prepared(model)
    return data.test_raw.X, quick_names(model)


def quick_names(model: str) -> list[str]:
    return list(prepared(model).schema.feature_names)


def write_parts(folder: Path, X: np.ndarray, names: list[str], parts: int, **extra: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(np.array_split(np.arange(len(X)), parts)):
        columns = {n: X[rows, j] for j, n in enumerate(names)}
        columns.update({k: np.asarray(v)[rows] for k, v in extra.items()})
        pq.write_table(pa.table(columns), folder / f"part-{i}.parquet", row_group_size=7)


def run_in_process(cfg: bp.BatchConfig, store: ModelStore) -> pa.Table:
    """batch_predict's steps with the Scorer called here instead of on Ray actors."""
    version, artifact = store.load(cfg.model, cfg.version)
    output = storage.locate(cfg.output)
    planned = bp.plan(cfg.input, artifact.schema, cfg.id_column)
    staging = storage.staging_of(output)
    staging.fs.create_dir(staging.path)
    threads = torch.get_num_threads()  # an actor takes one thread: give this process its own back
    try:
        scorer = bp.Scorer(cfg, version, planned, artifact.schema.feature_names, staging.path)
        chunks = [json.dumps(c.__dict__) for c in planned.chunks]
        batch = {"index": np.arange(len(chunks)), "chunk": np.asarray(chunks, dtype=object)}
        written = scorer(batch)
    finally:
        torch.set_num_threads(threads)
    assert int(written["rows"].sum()) == planned.rows
    bp.publish(staging, output, {"model": cfg.model, "version": version, "rows": planned.rows})
    return pq.read_table(output.path, filesystem=output.fs)


def config(store: ModelStore, tmp_path: Path, model: str = "iris", **kw: object) -> bp.BatchConfig:
    base = {"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "batch_size": 5}
    return bp.BatchConfig(model=model, store_uri=store.uri, **{**base, **kw})  # type: ignore[arg-type]


def assert_same_answers(rows: list[dict], answers: list[dict], version: str) -> None:
    """Row for row as `raylife predict` answers. float32 matmuls round differently with the batch
    size (BLAS blocking), so numbers agree to float32 precision, labels exactly."""
    for row, answer in zip(rows, answers, strict=True):
        assert row["model_version"] == version
        if "value" in answer:
            assert row["prediction"] == pytest.approx(answer["value"], rel=1e-6)
            continue
        assert row["prediction"] == answer["label"]
        got = {k: row[f"probability_{k}"] for k in answer["probabilities"]}
        assert got == pytest.approx(answer["probabilities"], abs=2e-6)


@pytest.mark.parametrize("model", ["iris", "boston"])
def test_scores_equal_predict_row_for_row(store, tmp_path, model):
    X, names = features(model)
    write_parts(tmp_path / "in", X, names, parts=3)
    table = run_in_process(config(store, tmp_path, model), store).sort_by("row_id")
    assert table.column("row_id").to_pylist() == list(range(len(X)))  # input order, all rows
    expected = Predictor.from_store(store, model).predict_array(X)
    assert_same_answers(table.to_pylist(), expected, store.resolve(model))


def test_output_schema_and_marker(store, tmp_path):
    X, names = features("iris")
    write_parts(tmp_path / "in", X, names, parts=2)
    table = run_in_process(config(store, tmp_path), store)
    assert table.schema.names == [
        "row_id",
        "prediction",
        "probability_setosa",
        "probability_versicolor",
        "probability_virginica",
        "model_version",
    ]
    assert table.schema.field("row_id").type == pa.int64()
    marker = json.loads((tmp_path / "out" / COMPLETE_MARKER).read_text())
    assert marker["rows"] == len(X) and marker["version"] == store.resolve("iris")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


def test_the_inputs_id_column_is_kept(store, tmp_path):
    X, names = features("iris")
    ids = np.asarray([f"customer-{i}" for i in range(len(X))])
    write_parts(tmp_path / "in", X, names, parts=2, customer=ids)
    table = run_in_process(config(store, tmp_path, id_column="customer"), store)
    assert sorted(table.column("customer").to_pylist()) == sorted(ids.tolist())
    with pytest.raises(InputError, match="no id column 'nope'.*--id-column"):
        run_in_process(
            config(store, tmp_path, id_column="nope", output=str(tmp_path / "o2")), store
        )


def test_csv_parts_score_like_parquet(store, tmp_path):
    import pandas as pd

    X, names = features("iris")
    (tmp_path / "in").mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(X)), 2)):
        pd.DataFrame(X[rows], columns=names).to_csv(tmp_path / "in" / f"p{i}.csv", index=False)
    table = run_in_process(config(store, tmp_path), store).sort_by("row_id")
    expected = Predictor.from_store(store, "iris").predict_array(X)
    assert table.column("prediction").to_pylist() == [a["label"] for a in expected]


# -------------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the fix, before any actor


def plan_of(store: ModelStore, path: Path | str, model: str = "iris") -> bp.Plan:
    return bp.plan(str(path), store.load(model)[1].schema, None)


def test_missing_and_empty_inputs_are_named(store, tmp_path):
    with pytest.raises(InputError, match="not found; pass an existing file, folder or glob"):
        plan_of(store, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files at"):
        plan_of(store, tmp_path / "empty")
    with pytest.raises(InputError, match="no files at"):
        plan_of(store, tmp_path / "empty" / "*.parquet")
    (tmp_path / "empty" / "notes.txt").write_text("not data")
    with pytest.raises(InputError, match="no Parquet, CSV or PNG files .*point --input at"):
        plan_of(store, tmp_path / "empty")


def test_glob_selects_files(store, tmp_path):
    X, names = features("iris")
    write_parts(tmp_path / "in", X, names, parts=3)
    assert plan_of(store, tmp_path / "in" / "part-[01].parquet").rows < len(X)
    assert plan_of(store, tmp_path / "in" / "*.parquet").rows == len(X)


def test_bad_tables_are_refused_naming_the_file(store, tmp_path):
    X, names = features("iris")
    write_parts(tmp_path / "missing", X[:, 1:], names[1:], parts=1)
    with pytest.raises(InputError, match=f"part-0.parquet lacks feature column.*{names[0]}"):
        plan_of(store, tmp_path / "missing")
    text = {n: X[:, j].astype(str) for j, n in enumerate(names)}
    write_parts(
        tmp_path / "text", np.zeros((3, 0)), [], parts=1, **{n: v[:3] for n, v in text.items()}
    )
    with pytest.raises(InputError, match="is string, not numeric; convert it"):
        plan_of(store, tmp_path / "text")
    write_parts(tmp_path / "mixed", X, names, parts=2)
    pq.write_table(
        pa.table({n: X[:5, j].astype(np.float32) for j, n in enumerate(names)}),
        tmp_path / "mixed" / "part-2.parquet",
    )
    with pytest.raises(InputError, match="part-2.parquet has columns .* same columns and types"):
        plan_of(store, tmp_path / "mixed")
    write_parts(tmp_path / "corrupt", X, names, parts=2)
    (tmp_path / "corrupt" / "part-1.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="part-1.parquet is not a readable parquet file"):
        plan_of(store, tmp_path / "corrupt")
    (tmp_path / "kinds").mkdir()
    (tmp_path / "kinds" / "a.csv").write_text("x\n1\n")
    (tmp_path / "kinds" / "b.png").write_bytes(b"")
    with pytest.raises(InputError, match="mixes CSV and PNG files; point --input at one kind"):
        plan_of(store, tmp_path / "kinds")


def test_csv_with_a_word_in_a_number_column_is_named(store, tmp_path):
    X, names = features("iris")
    lines = [",".join(names)] + [",".join(map(str, row)) for row in X]
    lines[-1] = lines[-1].replace(lines[-1].split(",")[0], "oops", 1)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "t.csv").write_text("\n".join(lines))
    # The type comes from the first block; a word after it fails the parse: both are named.
    with pytest.raises(InputError, match="t.csv: .*(not numeric|numbers for features)"):
        plan_of(store, tmp_path / "in")


def test_nan_in_a_feature_names_the_file_and_row(store, tmp_path):
    X, names = features("iris")
    X = X.copy()
    X[10, 2] = np.nan
    write_parts(tmp_path / "in", X, names, parts=1)
    with pytest.raises(InputError, match=f"part-0.parquet: row with id 10 has {names[2]} = nan"):
        run_in_process(config(store, tmp_path), store)
    assert not (tmp_path / "out").exists()


def png(size: tuple[int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_score_and_wrong_sizes_are_named(store, tmp_path):
    folder = tmp_path / "in"
    (folder / "7").mkdir(parents=True)
    for i in range(3):
        (folder / "7" / f"{i}.png").write_bytes(png((28, 28)))
    table = run_in_process(config(store, tmp_path, "mnist"), store)
    assert sorted(table.column("path").to_pylist()) == ["7/0.png", "7/1.png", "7/2.png"]
    assert table.schema.names[-1] == "model_version" and "probability_9" in table.schema.names
    (folder / "7" / "0.png").write_bytes(png((32, 32)))
    with pytest.raises(InputError, match="7/0.png: image is 32x32 pixels.*resize it"):
        plan_of(store, folder, "mnist")
    with pytest.raises(InputError, match="holds images, but this model takes feature rows"):
        plan_of(store, folder, "iris")


# -------------------------------------------------------------------------------------------------
# Output integrity


def test_a_complete_output_is_refused_unless_overwrite(store, tmp_path):
    X, names = features("iris")
    write_parts(tmp_path / "in", X, names, parts=2)
    run_in_process(config(store, tmp_path), store)
    with pytest.raises(RaylifeError, match="already complete.*pass --overwrite"):
        bp.check_output(storage.locate(str(tmp_path / "out")), overwrite=False)
    bp.check_output(storage.locate(str(tmp_path / "out")), overwrite=True)
    (tmp_path / "out" / "part-00000.parquet").write_bytes(b"stale")
    run_in_process(config(store, tmp_path, overwrite=True), store)  # replaced whole
    assert pq.read_table(tmp_path / "out").num_rows == len(X)


def test_a_folder_of_other_files_is_never_an_output(store, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(RaylifeError, match="holds other files.*notes.txt"):
        bp.check_output(storage.locate(str(tmp_path / "mine")), overwrite=True)
    (tmp_path / "half").mkdir()  # a failed publish: parts without the marker may be replaced
    (tmp_path / "half" / "part-00000.parquet").write_bytes(b"")
    bp.check_output(storage.locate(str(tmp_path / "half")), overwrite=False)


def test_a_failing_run_leaves_no_output_and_no_staging(store, tmp_path, monkeypatch):
    X, names = features("iris")
    write_parts(tmp_path / "in", X, names, parts=2)

    def half_written(cfg, version, planned, feature_names, staging):
        Path(staging.path).mkdir()
        (Path(staging.path) / "part-00000.parquet").write_bytes(b"half")
        raise InputError("an actor failed")

    monkeypatch.setattr(bp, "_score", half_written)
    with pytest.raises(InputError, match="an actor failed"):
        bp.batch_predict(config(store, tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_actor_errors_come_out_of_rays_wrappers():
    original = InputError("x.parquet: row with id 3 has a = nan; fix it")
    try:
        try:
            raise original
        except InputError as exc:
            raise RuntimeError("UserCodeException") from exc
    except RuntimeError as wrapped:
        assert storage.user_error(wrapped) is original
    assert storage.user_error(RuntimeError("a crash")) is None
    remote = RuntimeError(  # what reaches the driver: the actor's error only as text
        "ray::MapWorker(MapBatches(Scorer)).submit()\n  File ...\n"
        "raylife.errors.InputError: x.parquet: row with id 3 has a = nan; fix it\n\nThe above"
    )
    found = storage.user_error(remote)
    assert (
        isinstance(found, InputError)
        and str(found) == "x.parquet: row with id 3 has a = nan; fix it"
    )


def test_actor_options_cpu_and_gpu(store, tmp_path):
    cpu = bp.actor_options(config(store, tmp_path, actors=3))
    assert cpu["num_cpus"] == 1 and "num_gpus" not in cpu and cpu["compute"].min_size == 3
    gpu = bp.actor_options(config(store, tmp_path, actors=2, use_gpu=True))
    assert gpu["num_gpus"] == 1 and gpu["num_cpus"] == 1 and gpu["compute"].max_size == 2


def test_gpu_actor_without_cuda_says_so(store, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    X, names = features("iris")
    write_parts(tmp_path / "in", X, names, parts=1)
    with pytest.raises(RaylifeError, match="sees no CUDA device"):
        run_in_process(config(store, tmp_path, use_gpu=True), store)


def test_flags_are_validated():
    with pytest.raises(RaylifeError, match="at least 1"):
        bp.BatchConfig(model="iris", input="a", output="b", store_uri="s", actors=0)


# -------------------------------------------------------------------------------------------------
# S3 (moto on loopback): no rename there, so the parts are copied and the marker written last

from .test_s3 import BUCKET, s3  # noqa: E402, F401  (the module's moto fixture)


def test_s3_input_and_output_round_trip(store, tmp_path, s3):  # noqa: F811
    filesystem, query = s3
    X, names = features("iris")
    write_parts(tmp_path / "in", X, names, parts=2)
    for part in sorted((tmp_path / "in").iterdir()):
        with filesystem.open_output_stream(f"{BUCKET}/batch/iris/{part.name}") as handle:
            handle.write(part.read_bytes())
    cfg = config(
        store,
        tmp_path,
        input=f"s3://{BUCKET}/batch/iris/?{query}",
        output=f"s3://{BUCKET}/predictions/iris?{query}",
    )
    from pyarrow import fs as pafs

    assert run_in_process(cfg, store).num_rows == len(X)
    marker = bp.marker_of(storage.locate(cfg.output))
    assert marker is not None and marker["rows"] == len(X)
    everything = filesystem.get_file_info(
        pafs.FileSelector(f"{BUCKET}/predictions", recursive=True)
    )
    files = sorted(i.path for i in everything if i.type == pafs.FileType.File)
    assert files == [
        f"{BUCKET}/predictions/iris/{n}"
        for n in ("_COMPLETE", "part-00000.parquet", "part-00001.parquet")
    ]
    with pytest.raises(RaylifeError, match="already complete"):
        bp.check_output(storage.locate(cfg.output), overwrite=False)


def test_bench_table_and_plain_loop_without_ray(tmp_path, monkeypatch):
    from raylife.settings import Settings
    from raylife_dev.bench import batch_bench

    monkeypatch.setenv("RAYLIFE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYLIFE_STORE", raising=False)
    settings = Settings.from_env()
    store_uri, names = batch_bench.bench_artifact(settings)
    setup = batch_bench.BatchBenchSetup(
        rows=1000, parts=2, repeats=1, batch_size=256, scale_factor=0
    )
    batch_bench.write_table(tmp_path / "in", setup, names)
    measured = batch_bench.plain_loop(store_uri, tmp_path / "in", tmp_path / "out", 256)
    assert measured["rows_per_s"] > 0
    table = pq.read_table(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == list(range(1000))
    assert set(table.column("prediction").to_pylist()) <= {"b", "g"}
    assert batch_bench.setup_for(quick=False).rows == 1_000_000


def test_bench_splits_the_whole_call_into_fixed_cost_and_rate():
    from raylife_dev.bench import batch_bench
    from raylife_dev.bench.stats import Section

    # Plain: 200k rows/s. Actors: 400k rows/s once up, after 5 s of start. Both take
    # 5 + n/400k = n/200k s at n = 2M rows: the break-even.
    section = Section("batch", {})
    section.add("plain rows_per_s", [200_000.0], "rows/s")
    section.add("ray 2 actors scoring_rows_per_s", [400_000.0], "rows/s")
    section.add("ray 2 actors fixed_seconds", [5.0], "s")
    batch_bench._fixed_and_rate(section)
    assert section.figures["break-even rows (2 actors)"].median == pytest.approx(2_000_000)
    (check,) = section.checks
    assert check.value == pytest.approx(2.0) and check.met
    slower = Section("batch", {})  # actors slower than the plain loop even when up: no break-even
    slower.add("plain rows_per_s", [200_000.0], "rows/s")
    slower.add("ray 2 actors scoring_rows_per_s", [100_000.0], "rows/s")
    slower.add("ray 2 actors fixed_seconds", [5.0], "s")
    batch_bench._fixed_and_rate(slower)
    assert "break-even rows (2 actors)" not in slower.figures and not slower.checks[0].met
