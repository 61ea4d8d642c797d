"""Request capture: a sample of answered requests written as Parquet rows under the model store, off
the request path, in the format of raylife.lifecycle.captures (layout and columns are documented
there).

The request path only draws a random number and puts a tuple on a bounded queue; a writer thread
turns queued answers into rows and writes a file when `batch_rows` rows wait or `flush_s` passed,
and once more on close (the replica's graceful shutdown). A full queue drops the answer and counts
it (`stats()["dropped"]`, on the model's `/info`): capture never slows or blocks a request.
Feedback (the truth for an answer, `POST /<model>/feedback`) rides the same queue and thread into
its own folder, while capture is on: the data owner opted in to keeping callers' data.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from raylife.lifecycle.captures import (
    CAPTURE_DIR,
    FEEDBACK_DIR,
    FEEDBACK_SCHEMA,
    SCHEMA,
    part_name,
)
from raylife.lifecycle.store import ModelStore

logger = logging.getLogger(__name__)

BATCH_ROWS = 1000
FLUSH_S = 5.0
MAX_QUEUE = 50_000
"""Queued answers (requests, not rows) before new ones are dropped: ~10 s of one replica's peak."""

Answered = tuple[str, float, str, str, np.ndarray, list[dict[str, Any]], float]
"""(request id, unix time, version, route, rows, predictions, latency ms), as queued."""


@dataclass(frozen=True)
class Truth:
    """The truth sent back for one row of an answer, as queued."""

    request_id: str
    row: int
    at: float
    label: str | None
    value: float | None


Queued = Answered | Truth


def _rows(item: Queued) -> int:
    return 1 if isinstance(item, Truth) else len(item[5])


def new_request_id() -> str:
    return uuid.uuid4().hex


class CaptureWriter:
    """Samples answers into a bounded queue; a daemon thread writes them in batches."""

    def __init__(
        self,
        store_uri: str,
        model: str,
        fraction: float = 0.0,
        batch_rows: int = BATCH_ROWS,
        flush_s: float = FLUSH_S,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.store, self.model = ModelStore(store_uri), model
        self.fraction = fraction
        self.batch_rows, self.flush_s = batch_rows, flush_s
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._queue: queue.Queue[Queued] = queue.Queue(maxsize=max_queue)
        self._counts = {
            "captured": 0,
            "dropped": 0,
            "written": 0,
            "files": 0,
            "write_errors": 0,
            "feedback": 0,
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0

    # ---- the request path -------------------------------------------------------------------

    def record(
        self,
        request_id: str,
        X: np.ndarray,
        version: str,
        predictions: list[dict[str, Any]],
        latency_ms: float,
        route: str,
    ) -> None:
        """Queue one answered request if sampled; never blocks, never raises."""
        if self.fraction <= 0 or (self.fraction < 1 and random.random() >= self.fraction):
            return
        if self._thread is None:
            self._start()
        item = (request_id, time.time(), version, route, X, predictions, latency_ms)
        try:
            self._queue.put_nowait(item)
            counted = "captured"
        except queue.Full:
            counted = "dropped"
        with self._lock:
            self._counts[counted] += len(predictions)

    def record_feedback(
        self, request_id: str, row: int, label: str | None, value: float | None
    ) -> bool:
        """Queue the truth for one row of an answer; False when capture is off (nothing keeps
        feedback then) or the queue is full. Never blocks."""
        if self.fraction <= 0:
            return False
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(Truth(request_id, row, time.time(), label, value))
        except queue.Full:
            with self._lock:
                self._counts["dropped"] += 1
            return False
        return True

    def stats(self) -> dict[str, Any]:
        """Rows captured (queued), written, dropped (queue full), files and failed writes."""
        with self._lock:
            return {"fraction": self.fraction, "writer": self.name, **self._counts}

    # ---- the writer thread ------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"capture-{self.model}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        pending: list[Queued] = []
        rows, deadline = 0, time.monotonic() + self.flush_s
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            try:  # short waits: a close() is noticed within 0.2 s
                item = self._queue.get(timeout=min(timeout, 0.2))
                pending.append(item)
                rows += _rows(item)
            except queue.Empty:
                pass
            stopping = self._stop.is_set()
            if rows >= self.batch_rows or time.monotonic() >= deadline or stopping:
                if stopping:  # take everything queued before close() returned
                    pending.extend(self._drain())
                if pending:
                    pending = self._write(pending)
                rows = sum(_rows(item) for item in pending)
                deadline = time.monotonic() + self.flush_s
                if stopping:
                    if pending:  # the store still failing at shutdown: say what is lost
                        logger.error("capture: %d answers not written at shutdown", len(pending))
                        with self._lock:
                            self._counts["dropped"] += sum(_rows(item) for item in pending)
                    return

    def _drain(self) -> list[Queued]:
        items: list[Queued] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _write(self, pending: list[Queued]) -> list[Queued]:
        """Write one file per kind (answers, feedback) and date; what fails to write stays
        pending for the next flush."""
        groups: dict[tuple[bool, str], list[Queued]] = {}
        for item in pending:
            truth = isinstance(item, Truth)
            at = item.at if isinstance(item, Truth) else item[1]
            day = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
            groups.setdefault((truth, day), []).append(item)
        left: list[Queued] = []
        for (truth, day), items in groups.items():
            try:
                if truth:
                    table = feedback_table(self.model, self.name, items)  # type: ignore[arg-type]
                else:
                    table = to_table(self.model, self.name, items)  # type: ignore[arg-type]
                self._seq += 1
                folder = FEEDBACK_DIR if truth else CAPTURE_DIR
                name = part_name(folder, day, self.name, self._seq)
                self.store.replace_model_file(self.model, name, _parquet_bytes(table))
            except Exception:  # a store outage must not kill the writer; retried next flush
                logger.exception("capture: writing %d items failed; retrying", len(items))
                with self._lock:
                    self._counts["write_errors"] += 1
                left.extend(items)
                continue
            with self._lock:
                self._counts["feedback" if truth else "written"] += table.num_rows
                self._counts["files"] += 1
        return left

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued and stop the thread (idempotent): the replica's graceful shutdown."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def to_table(model: str, writer: str, items: list[Answered]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for request_id, at, version, route, X, predictions, latency_ms in items:
        stamp = datetime.fromtimestamp(at, UTC)
        for row, (values, answer) in enumerate(
            zip(X.reshape(len(X), -1), predictions, strict=True)
        ):
            columns["request_id"].append(request_id)
            columns["row"].append(row)
            columns["time"].append(stamp)
            columns["model"].append(model)
            columns["version"].append(version)
            columns["route"].append(route)
            columns["inputs"].append(values.tolist())
            columns["prediction"].append(json.dumps(answer))
            columns["label"].append(answer.get("label"))
            columns["value"].append(answer.get("value"))
            columns["latency_ms"].append(latency_ms)
            columns["replica"].append(writer)
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def feedback_table(model: str, writer: str, items: list[Truth]) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "request_id": [t.request_id for t in items],
            "row": [t.row for t in items],
            "time": [datetime.fromtimestamp(t.at, UTC) for t in items],
            "model": [model] * len(items),
            "label": [t.label for t in items],
            "value": [t.value for t in items],
            "replica": [writer] * len(items),
        },
        schema=FEEDBACK_SCHEMA,
    )


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())
