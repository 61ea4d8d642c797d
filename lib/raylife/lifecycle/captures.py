"""Captured traffic: the table Serve's replicas write (raylife.serve.capture) and the monitor, shadow
reports, online accuracy and retraining read. Serve owns writing; this module owns the format.

Layout: `<store>/<model>/captures/date=YYYY-MM-DD/part-<writer>-<seq>.parquet`, one file per flush
of one replica's writer (`<writer>` is unique per replica process, `<seq>` counts its files). A file
appears whole or not at all (the store's atomic replace locally, one PUT on S3).

One captured row per input row (a request of 3 rows gives 3 rows with the same `request_id`):

| column | type | what |
| --- | --- | --- |
| `request_id` | string | the answer's request id header (`raylife.serve.rollout.REQUEST_ID_HEADER`; a caller's own usable id is kept), which feedback names |
| `row` | int32 | index of this input row within its request; (`request_id`, `row`) is unique |
| `time` | timestamp[us, UTC] | when the answer was ready |
| `model` | string | registry key |
| `version` | string | store version that produced the prediction |
| `route` | string | `predict` (JSON rows), `image` (PNG upload) or `oip` (Open Inference Protocol) |
| `inputs` | list<float64> | the raw input values of the row, flattened in input-schema order |
| `prediction` | string | the row's answer as the caller got it (JSON) |
| `label` | string | predicted class (classification; null for regression) |
| `value` | float64 | predicted value (regression; null for classification) |
| `latency_ms` | float64 | the request's prediction time in the replica (excludes HTTP parsing and the proxy) |
| `replica` | string | the writer that captured it |

Feedback (`POST /<model>/feedback`, kept while capture is on) lands beside it, under
`<store>/<model>/feedback/date=YYYY-MM-DD/`, one row per truth: `request_id`, `row` (which row of
that request), `time`, `model`, `label` (classification) or `value` (regression), `replica`. Join
it to the captures on (`request_id`, `row`); `read_feedback` keeps the last truth sent per row.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from raylife import storage

CAPTURE_DIR = "captures"
FEEDBACK_DIR = "feedback"

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("version", pa.string()),
        ("route", pa.string()),
        ("inputs", pa.list_(pa.float64())),
        ("prediction", pa.string()),
        ("label", pa.string()),
        ("value", pa.float64()),
        ("latency_ms", pa.float64()),
        ("replica", pa.string()),
    ]
)


def part_name(folder: str, day: str, writer: str, seq: int) -> str:
    """Where a writer's file lands below the model: `<folder>/date=<day>/part-<writer>-<seq>`."""
    return f"{folder}/date={day}/part-{writer}-{seq:06d}.parquet"


def day_of(path: str) -> str:
    """The `date=YYYY-MM-DD` partition a file's path lies in ("" when none)."""
    for part in path.split("/"):
        if part.startswith("date="):
            return part.removeprefix("date=")
    return ""


FEEDBACK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("label", pa.string()),
        ("value", pa.float64()),
        ("replica", pa.string()),
    ]
)


def read_captures(
    store_uri: str,
    model: str,
    since: datetime | None = None,
    until: datetime | None = None,
    version: str | None = None,
) -> pa.Table:
    """Every captured row of `model` (the columns above), optionally from `since` (inclusive) to
    `until` (exclusive) and of one version. `.to_pandas()` gives a DataFrame. No captures: 0 rows."""
    return _read(store_uri, model, CAPTURE_DIR, SCHEMA, since, until, version)


def read_feedback(store_uri: str, model: str) -> pa.Table:
    """Every truth sent back for `model`'s answers, the last one per (request_id, row)."""
    table = _read(store_uri, model, FEEDBACK_DIR, FEEDBACK_SCHEMA, None, None, None)
    if table.num_rows == 0:
        return table
    keys = list(zip(table["request_id"].to_pylist(), table["row"].to_pylist(), strict=True))
    last = {key: i for i, key in enumerate(keys)}  # in time order: a later truth wins
    return table.take(sorted(last.values()))


def _read(
    store_uri: str,
    model: str,
    folder: str,
    schema: pa.Schema,
    since: datetime | None,
    until: datetime | None,
    version: str | None,
) -> pa.Table:
    import pyarrow.dataset as ds

    place = storage.locate(store_uri, "model store").joined(f"{model}/{folder}")
    if not storage.exists(place):
        return schema.empty_table()
    # The dataset skips hidden and `_` names (".name.xxxx": a local write in progress), as
    # storage.visible does.
    dataset = ds.dataset(place.path, schema=schema, format="parquet", filesystem=place.fs)
    condition = None
    for term in (
        ds.field("time") >= pa.scalar(since, pa.timestamp("us", tz="UTC")) if since else None,
        ds.field("time") < pa.scalar(until, pa.timestamp("us", tz="UTC")) if until else None,
        ds.field("version") == version if version else None,
    ):
        if term is not None:
            condition = term if condition is None else condition & term
    return dataset.to_table(filter=condition).sort_by([("time", "ascending")])
