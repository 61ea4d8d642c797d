"""Request capture (raylife.serve.capture) without Ray: batching by size and time, the flush on close,
drop counting when the queue is full, sampling, the reader, and capture through the HTTP API."""

import time

import numpy as np
from fastapi.testclient import TestClient

from raylife.lifecycle.captures import CAPTURE_DIR, SCHEMA, read_captures
from raylife.lifecycle.store import ModelStore
from raylife.serve.api import build_model_api
from raylife.serve.capture import CaptureWriter
from raylife.serve.model_service import ModelService
from raylife.serve.rollout import REQUEST_ID_HEADER
from raylife.waiting import wait_until

from ..conftest import quick_artifact

ANSWER = [{"label": "a", "probabilities": {"a": 0.9, "b": 0.1}}]


def files(store, model="iris"):
    return sorted((store / model / CAPTURE_DIR).rglob("*.parquet"))


def record(writer, n, rows=1):
    for i in range(n):
        writer.record(f"req-{i}", np.full((rows, 4), float(i)), "v1", ANSWER * rows, 1.5, "predict")


def test_batches_by_size_then_flushes_the_rest_on_close(tmp_path):
    writer = CaptureWriter(str(tmp_path), "iris", fraction=1.0, batch_rows=10, flush_s=60)
    record(writer, 25)
    wait_until(lambda: writer.stats()["written"] >= 20, 10, "no batch written", 0.02)
    assert len(files(tmp_path)) == 2  # two full batches, the last 5 rows still queued
    writer.close()
    stats = writer.stats()
    assert (stats["captured"], stats["written"], stats["dropped"], stats["files"]) == (25, 25, 0, 3)
    table = read_captures(str(tmp_path), "iris")
    assert table.schema == SCHEMA and table.num_rows == 25
    assert sorted(table["request_id"].to_pylist()) == sorted(f"req-{i}" for i in range(25))
    first = table.to_pandas().set_index("request_id").loc["req-3"]
    assert list(first["inputs"]) == [3.0] * 4 and first["label"] == "a"
    assert first["version"] == "v1" and first["latency_ms"] == 1.5 and first["route"] == "predict"
    assert np.isnan(first["value"])
    # Partitioned by date; file names unique per writer.
    assert all(path.parent.name.startswith("date=") for path in files(tmp_path))


def test_flushes_on_time_and_one_row_per_input_row(tmp_path):
    writer = CaptureWriter(str(tmp_path), "iris", fraction=1.0, batch_rows=1000, flush_s=0.2)
    record(writer, 2, rows=3)
    wait_until(lambda: writer.stats()["written"] == 6, 10, "no timed flush", 0.02)
    table = read_captures(str(tmp_path), "iris").to_pandas()
    assert sorted(zip(table["request_id"], table["row"], strict=True)) == [
        (f"req-{i}", r) for i in range(2) for r in range(3)
    ]
    writer.close()
    writer.close()  # idempotent: Serve and the garbage collector may both call it


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path, monkeypatch):
    writer = CaptureWriter(str(tmp_path), "iris", fraction=1.0, max_queue=5, flush_s=60)
    monkeypatch.setattr(writer, "_start", lambda: None)  # no writer thread: the queue only fills
    started = time.perf_counter()
    record(writer, 50)
    assert time.perf_counter() - started < 1.0
    assert writer.stats()["captured"] == 5 and writer.stats()["dropped"] == 45


def test_sampling_and_off(tmp_path):
    off = CaptureWriter(str(tmp_path), "iris")
    record(off, 100)
    assert off.stats()["captured"] == 0 and off._thread is None  # off: no thread at all
    some = CaptureWriter(str(tmp_path), "iris", fraction=0.3, flush_s=60)
    record(some, 2000)
    some.close()
    assert 450 < some.stats()["written"] < 750  # 600 expected; far outside 10 sigma otherwise


def test_a_failing_store_keeps_rows_for_the_next_flush(tmp_path, monkeypatch):
    writer = CaptureWriter(str(tmp_path), "iris", fraction=1.0, batch_rows=5, flush_s=0.1)
    calls = {"n": 0}
    original = writer.store.replace_model_file

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("store down")
        original(*args)

    monkeypatch.setattr(writer.store, "replace_model_file", flaky)
    record(writer, 5)
    wait_until(lambda: writer.stats()["written"] == 5, 10, "never retried", 0.02)
    writer.close()
    assert (
        writer.stats()["write_errors"] == 1 and read_captures(str(tmp_path), "iris").num_rows == 5
    )


def test_reader_filters_and_an_empty_store(tmp_path):
    assert read_captures(str(tmp_path), "iris").num_rows == 0
    writer = CaptureWriter(str(tmp_path), "iris", fraction=1.0)
    record(writer, 3)
    writer.record("other", np.zeros((1, 4)), "v2", ANSWER, 2.0, "oip")
    writer.close()
    assert read_captures(str(tmp_path), "iris", version="v2")["request_id"].to_pylist() == ["other"]
    import datetime as dt

    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert read_captures(str(tmp_path), "iris", since=future).num_rows == 0
    assert read_captures(str(tmp_path), "iris", until=future).num_rows == 4


def iris_api(folder, fraction: float, rollouts: bool = False) -> tuple[TestClient, CaptureWriter]:
    """A promoted untrained iris behind its HTTP API, capturing `fraction` of its answers;
    rollouts: with the Serve-only routes (/feedback, /rollout)."""
    from raylife.serve.rollout import Rollouts

    store = ModelStore(str(folder))
    store.promote("iris", store.register(quick_artifact("iris", epochs=0)))
    service = ModelService("iris", str(folder))
    writer = CaptureWriter(str(folder), "iris", fraction=fraction)

    async def predict(X):
        loaded, predictions = service.predict(X)
        return loaded.version, predictions

    routes = Rollouts("iris", "cpu", service.load_version) if rollouts else None
    return TestClient(build_model_api(service, predict, rollouts=routes, capture=writer)), writer


def test_every_route_is_captured_with_the_answers_request_id(tmp_path):
    model = "iris"
    client, writer = iris_api(tmp_path, 1.0)
    row = [5.1, 3.5, 1.4, 0.2]
    native = client.post("/", json={"rows": [row, row]})
    oip = client.post(
        "/v2/models/iris/infer",
        json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]},
        headers={REQUEST_ID_HEADER: "caller-1", "x-request-id": "trace-0"},  # raylife's wins
    )
    traced = client.post("/", json={"row": row}, headers={"x-request-id": "trace-7"})
    assert traced.headers[REQUEST_ID_HEADER] == "trace-7"  # one id with the proxy's logs
    bad = client.post("/", json={"row": row}, headers={"x-request-id": "a b/c"})
    assert bad.headers[REQUEST_ID_HEADER] not in ("a b/c", "")  # unusable: a fresh id instead
    assert native.status_code == oip.status_code == 200
    assert client.post("/", json={"row": [1, 2]}).status_code == 422  # refused: not captured
    assert client.get("/info").json()["capture"]["captured"] == 5
    writer.close()
    table = read_captures(str(tmp_path), model).to_pandas()
    assert len(table) == 5
    assert set(table["request_id"]) == {
        native.headers[REQUEST_ID_HEADER],
        "caller-1",
        "trace-7",
        bad.headers[REQUEST_ID_HEADER],
    }
    assert sorted(table["route"]) == ["oip", "predict", "predict", "predict", "predict"]
    assert table["prediction"].str.contains('"label"').all()


def test_feedback_is_kept_beside_the_captures_while_capture_is_on(tmp_path):
    from raylife.lifecycle.captures import FEEDBACK_DIR, read_feedback

    model = "iris"
    client, writer = iris_api(tmp_path, 0.0, rollouts=True)
    answer = client.post("/", json={"rows": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    request_id = answer.headers[REQUEST_ID_HEADER]
    off = client.post("/feedback", json={"request_id": request_id, "label": "setosa"})
    assert off.status_code == 404 and "capture is off" in off.json()["message"]  # nothing kept
    writer.fraction = 1.0
    for row, label in [(0, "versicolor"), (1, 2), (0, "setosa")]:  # a later truth wins
        kept = client.post("/feedback", json={"request_id": request_id, "row": row, "label": label})
        assert kept.status_code == 200 and kept.json()["kept"] is True
    bad = client.post("/feedback", json={"request_id": request_id, "label": "rose"})
    assert bad.status_code in (400, 422) and "unknown label" in bad.text, bad.text
    writer.close()
    assert list((tmp_path / model / FEEDBACK_DIR).rglob("*.parquet"))
    truths = read_feedback(str(tmp_path), model).to_pandas()
    assert sorted(zip(truths["row"], truths["label"], strict=True)) == [
        (0, "setosa"),
        (1, "virginica"),
    ]
    assert writer.stats()["feedback"] == 3
    assert read_captures(str(tmp_path), model).num_rows == 0  # the answer came before capture
