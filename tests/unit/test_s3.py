"""The s3:// paths (model store and user tables) against a local S3 server (moto, loopback only)."""

from __future__ import annotations

import io
from dataclasses import replace

import pandas as pd
import pytest

from raylife.data.sources import load_table
from raylife.lifecycle import history
from raylife.lifecycle.history import HistoryError
from raylife.lifecycle.promotion import promote, rollback
from raylife.lifecycle.store import COMPLETE_MARKER, ModelStore

from ..conftest import quick_artifact

BUCKET = "raylife-test"


@pytest.fixture(scope="module")
def s3():
    """(filesystem, uri query) of a moto S3 server on 127.0.0.1 with an empty bucket."""
    moto_server = pytest.importorskip("moto.server")
    from pyarrow import fs as pafs

    mp = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(key, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    filesystem = pafs.S3FileSystem(
        endpoint_override=f"{host}:{port}",
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    filesystem.create_dir(BUCKET)
    yield filesystem, query
    server.stop()
    mp.undo()


def test_store_round_trip_and_promotion_on_s3(s3):
    _, query = s3
    store = ModelStore(f"s3://{BUCKET}/store?{query}")
    artifact = quick_artifact("iris")
    version = store.register(artifact)
    assert store.versions("iris") == [version]
    loaded_version, loaded = store.load("iris", version)
    assert loaded_version == version and loaded.weights_sha256 == artifact.weights_sha256
    assert store.promote("iris", version).generation == 1
    assert store.resolve("iris") == version


def test_s3_version_without_completion_marker_is_invisible(s3):
    filesystem, query = s3
    store = ModelStore(f"s3://{BUCKET}/partial?{query}")
    version = store.register(quick_artifact("iris"))
    filesystem.delete_file(f"{BUCKET}/partial/iris/{version}/{COMPLETE_MARKER}")  # upload cut short
    assert store.versions("iris") == []


def test_table_from_s3(s3):
    filesystem, query = s3
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    with filesystem.open_output_stream(f"{BUCKET}/tables/t.parquet") as handle:
        handle.write(buffer.getvalue())
    raw = load_table(f"s3://{BUCKET}/tables/t.parquet?{query}", "y", "binary")
    assert raw.X.shape == (4, 1) and raw.label_names == ["0", "1"]


def test_gate_history_and_rollback_on_s3(s3):
    filesystem, query = s3
    store = ModelStore(f"s3://{BUCKET}/governed?{query}")
    base = quick_artifact("iris")
    good, worse, better = (
        store.register(replace(base, metrics={"test_accuracy": value})) for value in (0.8, 0.5, 0.9)
    )
    assert promote(store, "iris", good).action == "promote"
    assert promote(store, "iris", worse).action == "refuse"
    assert promote(store, "iris", better).action == "promote"
    assert rollback(store, "iris").version == good and store.resolve("iris") == good
    assert [e.action for e in history.read(store, "iris")] == [
        "promote",
        "refuse",
        "promote",
        "rollback",
    ]
    assert (
        store.location("iris", history.HISTORY_FILE) == f"s3://{BUCKET}/governed/iris/HISTORY.jsonl"
    )
    with filesystem.open_output_stream(f"{BUCKET}/governed/iris/HISTORY.jsonl") as handle:
        handle.write(b"not json\n")
    with pytest.raises(HistoryError, match="governed/iris/HISTORY.jsonl line 1 is not a history"):
        rollback(store, "iris")
    assert store.resolve("iris") == good
