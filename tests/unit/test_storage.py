"""raylife.storage, and every consumer of it (the store, streaming ingest, batch inference,
request capture, table reading) accepting the same URIs: a local path, file:// and s3:// (a moto
server on loopback, as in test_s3.py)."""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from raylife import storage
from raylife.data import streaming
from raylife.data.sources import load_table
from raylife.errors import InputError, RaylifeError
from raylife.inference import batch_predict as bp
from raylife.inference.predict import Predictor
from raylife.lifecycle.captures import read_captures
from raylife.lifecycle.store import ModelStore
from raylife.serve.capture import CaptureWriter
from raylife.storage import COMPLETE_MARKER

from ..conftest import prepared, quick_artifact
from .test_batch_predict import run_in_process
from .test_s3 import BUCKET, s3  # noqa: F401  (the moto server fixture)

SCHEMES = ["path", "file", "s3"]


@dataclass
class Place:
    """A test folder as one scheme spells it, and the filesystem the test writes inputs with."""

    base: str
    """The folder's URI without a query string."""
    query: str
    fs: Any
    root: str
    """The folder's path on fs."""

    def uri(self, rel: str) -> str:
        return f"{self.base}/{rel}" + (f"?{self.query}" if self.query else "")

    def write(self, rel: str, payload: bytes) -> None:
        self.fs.create_dir(f"{self.root}/{rel}".rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(f"{self.root}/{rel}") as handle:
            handle.write(payload)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.get_file_info(f"{self.root}/{rel}").type != pafs.FileType.NotFound)


@pytest.fixture(params=SCHEMES)
def place(request: pytest.FixtureRequest, tmp_path: Any) -> Place:
    if request.param == "s3":  # moto starts only for the s3 cases
        filesystem, query = request.getfixturevalue("s3")
        prefix = f"{BUCKET}/{uuid.uuid4().hex[:8]}"
        return Place(f"s3://{prefix}", query, filesystem, prefix)
    base = str(tmp_path) if request.param == "path" else tmp_path.as_uri()
    return Place(base, "", pafs.LocalFileSystem(), str(tmp_path))


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# --------------------------------------------------------------------------------------------------
# The module


def test_locate_local_paths_and_file_uris_alike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri in (
        str(tmp_path / "a"),
        (tmp_path / "a").as_uri(),
        "a",
        "./a/",
        f"file://{tmp_path}/a",
    ):
        loc = storage.locate(uri)
        assert loc.is_local and loc.path == loc.uri == str(tmp_path / "a"), uri


def test_locate_s3_keeps_the_query_out_of_messages(s3):  # noqa: F811
    _, query = s3
    loc = storage.locate(f"s3://{BUCKET}/some/prefix/?{query}")
    assert not loc.is_local and loc.path == f"{BUCKET}/some/prefix"
    assert loc.uri == f"s3://{BUCKET}/some/prefix"
    assert loc.uri_of(f"{BUCKET}/x.parquet") == f"s3://{BUCKET}/x.parquet"
    assert loc.joined("m/v").path == f"{BUCKET}/some/prefix/m/v"


def test_static_keys_are_made_explicit_for_ray_datas_tasks(monkeypatch):
    query = "endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    implicit = storage.locate(f"s3://bucket/p?{query}").fs
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    explicit = storage.locate(f"s3://bucket/p?{query}").fs
    assert "from-env" not in str(implicit.__reduce__()) and "from-env" in str(explicit.__reduce__())
    assert explicit.region == "us-east-1"
    named = storage.locate(f"s3://mine:key@bucket/p?{query}").fs  # the URI's own keys win
    assert "from-env" not in str(named.__reduce__())


def test_a_bad_uri_names_what_and_the_fix():
    with pytest.raises(RaylifeError, match="cannot open model store nosuch://x: .*check the URI"):
        storage.locate("nosuch://x?a=1", "model store")


def test_listing_skips_hidden_and_underscore_entries_at_any_depth(tmp_path):
    for rel in (
        "a.parquet",
        "sub/b.parquet",
        ".staging-x/c.parquet",
        "_temporary/0/d.parquet",
        "sub/_SUCCESS",
        "sub/.e.parquet.tmp",
        "_COMPLETE",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    loc = storage.locate(str(tmp_path))
    names = [p.removeprefix(f"{tmp_path}/") for p, _ in storage.list_files(loc)]
    assert names == ["a.parquet", "sub/b.parquet"]
    assert names == [
        p.removeprefix(f"{tmp_path}/") for p, _ in storage.find_files(loc.child(f"{tmp_path}/**"))
    ]
    assert storage.find_files(loc.joined(".staging-x/c.parquet")) == [  # a file named: itself
        (f"{tmp_path}/.staging-x/c.parquet", 1)
    ]
    assert storage.find_files(loc.joined("nope")) is None
    (tmp_path / "model").mkdir()
    assert storage.list_dirs(loc) == ["model", "sub"]
    assert storage.list_dirs(loc, "a.parquet") == [] and storage.list_dirs(loc, "nope") == []


@pytest.mark.parametrize("scheme", ["path", "s3"])
def test_publish_replaces_whole_with_the_marker_last(scheme, request, tmp_path):
    if scheme == "s3":
        _, query = request.getfixturevalue("s3")
        final = storage.locate(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/out?{query}")
    else:
        final = storage.locate(str(tmp_path / "out"))
    for generation in (1, 2):
        staging = storage.staging_of(final)
        assert staging.path.rsplit("/", 1)[1].startswith(".staging-out-")
        final.fs.create_dir(staging.path)
        storage.write_bytes(staging, f"part-{generation}.parquet", b"rows")
        storage.publish(staging, final, f"{generation}".encode(), replace=True)
        assert storage.read_marker(final) == f"{generation}".encode()
        assert [p.rsplit("/", 1)[1] for p, _ in storage.list_files(final)] == [
            f"part-{generation}.parquet"
        ]
        assert not storage.exists(staging)
    assert storage.read_marker(final.joined("nothing")) is None


def test_write_folder_never_shows_a_half_folder(tmp_path):
    root = storage.locate(str(tmp_path))
    storage.write_folder(root.joined("v1"), {"a": b"1", "b": b"2"})
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == ["_COMPLETE", "a", "b"]
    with pytest.raises(OSError):  # an existing folder is never merged into
        storage.write_folder(root.joined("v1"), {"c": b"3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]  # its staging folder removed


def test_root_cause_and_user_error_see_through_wrappers():
    original = InputError("bad row; fix it")
    wrapped = RuntimeError("TrainingFailedError\n  traceback...")
    wrapped.__cause__ = original  # as `raise RuntimeError(...) from original` leaves it
    assert storage.root_cause(wrapped) == "bad row; fix it"
    assert storage.user_error(wrapped) is original
    assert storage.root_cause(RuntimeError()) == "RuntimeError"
    assert storage.root_cause(ValueError("first\nlast line ")) == "last line"
    assert storage.user_error(ValueError("raylife.errors.NotAClass: x")).__class__ is RaylifeError


# --------------------------------------------------------------------------------------------------
# Every consumer, every scheme


def test_store(place):
    store = ModelStore(place.uri("store"))
    version = store.register(quick_artifact("iris", epochs=0))
    assert place.exists(f"store/iris/{version}/{COMPLETE_MARKER}")
    assert store.models() == ["iris"] and store.versions("iris") == [version]
    assert store.promote("iris", version).generation == 1 and store.resolve("iris") == version
    store.replace_model_file("iris", "notes/a.txt", b"kept")
    assert store.read_model_file("iris", "notes/a.txt") == b"kept"
    assert store.read_model_file("iris", "notes/none.txt") is None


def test_streaming_ingest(place):
    table = pa.table({"x": [1.0, 2.0], "target": [0, 1]})
    for rel in ("t/p0.parquet", "t/more/p1.parquet", "t/_temporary/p2.parquet", "t/_SUCCESS"):
        place.write(rel, parquet_bytes(table))
    for uri in (place.uri("t"), place.uri("t/*.parquet"), place.uri("t/**.parquet")):
        files = streaming.resolve(uri)  # fnmatch's `*` spans folders; `_` entries skipped
        assert [p.rsplit("/", 1)[1] for p in files.paths] == ["p1.parquet", "p0.parquet"], uri
        assert streaming.check_tables(files, "target").features == ["x"]
    assert streaming.wants_streaming(place.uri("t"))
    assert not streaming.wants_streaming(place.uri("t/p0.parquet"))  # small: in memory
    with pytest.raises(InputError, match="not found"):
        streaming.resolve(place.uri("none"))


def test_batch_inference(place):
    store = ModelStore(place.uri("store"))
    store.promote("iris", store.register(quick_artifact("iris", epochs=0)))
    X = prepared("iris").test_raw.X
    names = list(prepared("iris").schema.feature_names)
    place.write(
        "in/part-0.parquet", parquet_bytes(pa.table({n: X[:, j] for j, n in enumerate(names)}))
    )
    cfg = bp.BatchConfig(
        model="iris", input=place.uri("in"), output=place.uri("out"), store_uri=place.uri("store")
    )
    bp.check_output(storage.locate(cfg.output), overwrite=False)
    table = run_in_process(cfg, store).sort_by("row_id")
    assert table.num_rows == len(X)
    expected = Predictor.from_store(store, "iris").predict_array(X)
    assert table.column("prediction").to_pylist() == [a["label"] for a in expected]
    marker = bp.marker_of(storage.locate(cfg.output))
    assert marker is not None and marker["rows"] == len(X)
    with pytest.raises(RaylifeError, match="already complete"):
        bp.check_output(storage.locate(cfg.output), overwrite=False)


def test_capture(place):
    writer = CaptureWriter(place.uri("store"), "iris", fraction=1.0, batch_rows=1000, flush_s=60)
    answer = [{"label": "a", "probabilities": {"a": 0.9, "b": 0.1}}]
    for i in range(3):
        writer.record(f"req-{i}", np.full((1, 4), float(i)), "v1", answer, 1.0, "predict")
    writer.close()
    assert writer.stats()["written"] == 3
    captured = read_captures(place.uri("store"), "iris")
    assert sorted(captured["request_id"].to_pylist()) == ["req-0", "req-1", "req-2"]
    assert read_captures(place.uri("store"), "other").num_rows == 0


def test_table_reading(place):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    place.write("tables/t.parquet", parquet_bytes(pa.Table.from_pandas(frame)))
    place.write("tables/t.csv", frame.to_csv(index=False).encode())
    for name in ("t.parquet", "t.csv"):
        raw = load_table(place.uri(f"tables/{name}"), "y", "binary")
        assert raw.X.shape == (4, 1) and raw.label_names == ["0", "1"]
    with pytest.raises(RaylifeError, match="not found; pass an existing CSV"):
        load_table(place.uri("tables/none.csv"), "y", "binary")


def test_the_marker_is_json_for_batch_outputs(tmp_path):
    final = storage.locate(str(tmp_path / "out"))
    staging = storage.staging_of(final)
    final.fs.create_dir(staging.path)
    bp.publish(staging, final, {"rows": 3})
    assert json.loads((tmp_path / "out" / COMPLETE_MARKER).read_text()) == {"rows": 3}
