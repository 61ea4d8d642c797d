"""Batch inference: score a table or an image folder of any size with a stored model version.

    input (Parquet/CSV file, folder or glob; PNG folder; local or s3://)
      -> plan: every file's footer or header checked against the model's InputSchema, split into
         chunks (Parquet row groups, CSV files, runs of images) with their first row id
      -> ray.data: chunks -> map_batches(Scorer) on an actor pool (one Predictor per actor, on a
         GPU with use_gpu) -> write_parquet into a staging location
      -> publish: the staging parts moved under --output, the _COMPLETE marker written last

Outputs equal `raylife predict` row for row: the actors call the same `Predictor.predict_batch`.
Each output row carries the input's id column (--id-column, else an `id` column, else a generated
`row_id`: the row's position in the input, files in name order; `path` for images), the prediction,
a `probability_<label>` column per class (classification) and the model version.

Visibility, as in the store: an output folder without _COMPLETE is not an output. Locally the parts
are written into a hidden sibling folder renamed into place; on S3 (no rename) they are copied
under the output prefix and the marker is written last. A complete output is only replaced with
overwrite=True; an incomplete one (a failed publish: Parquet parts only) is replaced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from raylife import storage
from raylife.config import StallPolicy
from raylife.errors import InputError, RaylifeError
from raylife.inference.predict import Predictions, Predictor
from raylife.storage import Location, locate
from raylife.training.watchdog import Pace, Watch, exit_stalled

TABLE_SUFFIXES = (".parquet", ".csv")
IMAGE_SUFFIXES = (".png",)
ROW_ID = "row_id"
IMAGE_ID = "path"
CHUNK_ROWS = 65_536
"""Rows one actor call reads (consecutive Parquet row groups up to this size): big enough that a
call's overhead is noise, small enough that two actors share a few-file table evenly."""
IMAGES_PER_CHUNK = 256


@dataclass(frozen=True)
class BatchConfig:
    """One batch-predict run (the `raylife batch-predict` flags)."""

    model: str
    """Registry key of the model in the store."""
    input: str
    """Parquet/CSV file, folder or glob, or a folder of PNGs; local or s3://."""
    output: str
    """Folder or s3:// prefix for the Parquet parts and the _COMPLETE marker."""
    store_uri: str
    """The model store (folder or s3://bucket/prefix)."""
    version: str | None = None
    """Version id, 'latest' or 'promoted' (None: the promoted one)."""
    actors: int = 2
    """Actors in the pool, each with its own Predictor (one CPU, or one GPU with use_gpu)."""
    batch_size: int = 4096
    """Rows per forward pass."""
    use_gpu: bool = False
    """One GPU per actor; the forward pass runs on it."""
    id_column: str | None = None
    """The inputs' id column (default: `id` if present, else a generated `row_id`)."""
    overwrite: bool = False
    """Replace a complete output."""
    max_failures: int = 2
    """Times a chunk is retried on a restarted actor after its actor died (or its watch ended it);
    then the run fails and publishes nothing."""
    stall_factor: float = StallPolicy.factor
    """Watchdog: an actor whose chunk makes no progress (a batch scored) for this many times its
    slowest gap so far is ended, and the chunk retried; 0 turns the watch off."""
    stall_floor_s: float = StallPolicy.floor_s
    """Watchdog: the least time without progress that counts as a stall."""

    def __post_init__(self) -> None:
        if self.actors < 1 or self.batch_size < 1:
            raise RaylifeError("--actors and --batch-size must be at least 1; pass e.g. --actors 2")
        if self.max_failures < 0:
            raise RaylifeError(f"--max-failures must be >= 0, got {self.max_failures}")
        StallPolicy(self.stall_factor, self.stall_floor_s)  # validates the watchdog fields

    @property
    def stall(self) -> StallPolicy:
        return StallPolicy(self.stall_factor, self.stall_floor_s)


# --------------------------------------------------------------------------------------------------
# Planning: what the input is, checked before any actor starts


@dataclass(frozen=True)
class Chunk:
    """One actor call's share of the input."""

    path: str
    first_row: int
    """Row id of the chunk's first row (its position in the whole input)."""
    row_groups: list[int] = field(default_factory=list)
    """Parquet row groups of `path` (empty: the whole file)."""
    images: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    kind: str
    """'parquet', 'csv' or 'images'."""
    chunks: list[Chunk]
    rows: int
    id_column: str
    """The output's id column: the input's, or ROW_ID / IMAGE_ID when generated."""
    id_from_input: bool
    table_schema: pa.Schema | None = None
    """The parts' common schema (tables): CSV parts are parsed in these column types."""


def plan(uri: str, schema: Any, id_column: str | None) -> Plan:
    """What the input is, checked before any actor starts. The files are listed and their
    schemas read as training's streaming ingest does (`streaming.resolve`, `common_schema`)."""
    # lazy: imports pyarrow, needed only on this path
    from raylife.data.streaming import common_schema, resolve

    files, source = resolve(uri, flag="--input"), locate(uri, "input")
    if files.format == "images":
        return _plan_images(source, files.paths, schema, id_column)
    if schema.is_image:
        raise InputError(
            f"input {source.uri} holds tables, but this model takes {schema.shape} images; "
            "pass a folder of PNGs"
        )
    common, first = common_schema(files)
    _check_features(source.uri_of(first), common, schema.feature_names)
    id_name, from_input = _id_column(source, first, common, id_column)
    if files.format == "parquet":
        chunks, rows = _parquet_chunks(source, files.paths)
    else:
        chunks, rows = _csv_chunks(source, files.paths, common)
    return Plan(files.format, chunks, rows, id_name, from_input, common)


def _check_features(where: str, found: pa.Schema, features: list[str]) -> None:
    """The model's feature columns are all there, and numeric (every part has this schema)."""
    missing = [f for f in features if f not in found.names]
    if missing:
        raise InputError(
            f"{where} lacks feature column(s) {missing[:5]}; the model takes: {', '.join(features)}"
        )
    for name in features:
        kind = found.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise InputError(
                f"{where}: feature {name!r} is {kind}, not numeric; convert it to numbers "
                "before scoring"
            )


def _id_column(loc: Location, path: str, schema: pa.Schema, wanted: str | None) -> tuple[str, bool]:
    if wanted is not None:
        if wanted not in schema.names:
            raise InputError(
                f"{loc.uri_of(path)} has no id column {wanted!r}; pass one of its columns to "
                f"--id-column ({', '.join(schema.names[:8])}) or drop the flag"
            )
        return wanted, True
    if "id" in schema.names:
        return "id", True
    return ROW_ID, False


def _parquet_chunks(loc: Location, files: list[str]) -> tuple[list[Chunk], int]:
    """Consecutive row groups up to CHUNK_ROWS per chunk; row ids from the footers' counts."""
    import pyarrow.parquet as pq

    chunks, offset = [], 0
    for path in files:
        with loc.fs.open_input_file(path) as handle:
            meta = pq.read_metadata(handle)
        groups: list[int] = []
        start, rows = offset, 0
        for index in range(meta.num_row_groups):
            groups.append(index)
            rows += meta.row_group(index).num_rows
            if rows >= CHUNK_ROWS or index == meta.num_row_groups - 1:
                chunks.append(Chunk(path, start, row_groups=groups))
                start, groups, offset, rows = start + rows, [], offset + rows, 0
    if offset == 0:
        raise InputError(f"input {loc.uri} has no rows; point --input at a non-empty table")
    return chunks, offset


def _csv_chunks(loc: Location, files: list[str], schema: pa.Schema) -> tuple[list[Chunk], int]:
    """One chunk per file; the files are parsed here once (row counts, every value's type):
    CSV has no footer. Parquet is the format for large tables."""
    chunks, offset = [], 0
    for path in files:
        chunks.append(Chunk(path, offset))
        offset += sum(len(batch) for batch in _csv_batches(loc, path, schema))
    if offset == 0:
        raise InputError(f"input {loc.uri} has no rows; point --input at a non-empty table")
    return chunks, offset


def _csv_batches(loc: Location, path: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The file in the column types of its first block: a later non-number is named."""
    from pyarrow import csv

    options = csv.ConvertOptions(column_types=schema)
    try:
        with csv.open_csv(loc.fs.open_input_stream(path), convert_options=options) as reader:
            yield from reader
    except pa.ArrowInvalid as exc:
        raise InputError(
            f"{loc.uri_of(path)}: {str(exc)[:160]}; every row of a column needs the same type "
            "(numbers for features)"
        ) from exc


def _plan_images(loc: Location, files: list[str], schema: Any, id_column: str | None) -> Plan:
    # lazy: imports torch, needed only on this path
    from raylife.inference.predict import image_to_array

    if not schema.is_image:
        raise InputError(
            f"input {loc.uri} holds images, but this model takes feature rows; pass a table"
        )
    if id_column is not None:
        raise InputError("--id-column applies to tables; images are named by their path: drop it")
    with loc.fs.open_input_stream(files[0]) as handle:
        _image(lambda: image_to_array(handle.read(), schema), loc.uri_of(files[0]))
    chunks = [
        Chunk(files[i], i, images=files[i : i + IMAGES_PER_CHUNK])
        for i in range(0, len(files), IMAGES_PER_CHUNK)
    ]
    return Plan("images", chunks, len(files), IMAGE_ID, False)


def _image(read: Any, where: str) -> np.ndarray:
    try:
        return read()
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# The actors' work: read a chunk, predict, answer in output rows


def answer_table(
    ids: pa.Array, id_name: str, answers: Predictions, labels: list[str], version: str
) -> pa.Table:
    """The output rows of one batch: id, prediction, probability_<label>..., model_version."""
    columns: dict[str, Any] = {id_name: ids}
    if answers.probabilities is None:
        columns["prediction"] = pa.array(answers.values, pa.float64())
    else:
        names = np.asarray(labels, dtype=object)
        columns["prediction"] = pa.array(names[answers.labels], pa.string())
        for index, label in enumerate(labels):
            columns[f"probability_{label}"] = pa.array(answers.probabilities[:, index])
    columns["model_version"] = pa.array(np.full(len(ids), version, dtype=object), pa.string())
    return pa.table(columns)


def features_of(batch: pa.RecordBatch | pa.Table, names: list[str]) -> np.ndarray:
    """(n, features) float64 in the model's column order (nulls become NaN, refused later)."""
    return np.column_stack(
        [batch.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names]
    )


def check_finite(X: np.ndarray, ids: pa.Array, names: list[str], where: str) -> None:
    finite = np.isfinite(X)
    if finite.all():
        return
    row, col = np.argwhere(~finite)[0]
    raise InputError(
        f"{where}: row with id {ids[int(row)].as_py()!r} has {names[col]} = {X[row, col]} "
        "(NaN, inf or empty); fix or drop such rows, batch inference takes finite numbers only"
    )


class Scorer:
    """An actor of the pool: loads the Predictor once (checksum verified), then scores chunks."""

    def __init__(
        self, cfg: BatchConfig, version: str, plan_: Plan, features: list[str], staging: str
    ) -> None:
        # lazy: imports torch, pyarrow, needed only on this path
        import torch

        from raylife.lifecycle.store import ModelStore

        # One torch thread per actor (it holds one CPU): N actors use N cores, never more, so
        # adding actors adds throughput instead of oversubscribing the cores.
        torch.set_num_threads(1)
        device = "cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu"
        if cfg.use_gpu and device == "cpu":
            raise RaylifeError("--use-gpu, but this actor sees no CUDA device; drop --use-gpu")
        self.predictor = Predictor.from_store(ModelStore(cfg.store_uri), cfg.model, version, device)
        self.input = locate(cfg.input, "input")
        self.output_fs, self.staging = locate(cfg.output, "output").fs, staging
        self.cfg, self.plan, self.features = cfg, plan_, features
        # Learns the pace of scoring across this actor's chunks; only a chunk's own work is
        # watched (an actor waiting for its next chunk is idle, not stalled).
        self.pace = Pace(cfg.stall)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each chunk's answers streamed into its own part file (part-<chunk index>.parquet):
        written here, so the answers never travel through the object store."""
        import pyarrow.parquet as pq

        rows, started = [], time.time()
        for index, item in zip(batch["index"], batch["chunk"], strict=True):
            chunk, written, writer = Chunk(**json.loads(item)), 0, None
            path = f"{self.staging}/part-{int(index):05d}.parquet"
            self.pace.resume()
            name = f"batch {self.cfg.model} chunk {int(index)}"
            with (
                Watch(self.pace, name, exit_stalled),
                self.output_fs.open_output_stream(path) as sink,
            ):
                for ids, X in self._read(chunk):
                    table = answer_table(
                        ids,
                        self.plan.id_column,
                        self.predictor.predict_batch(X),
                        self.predictor.label_names,
                        self.predictor.version,
                    )
                    writer = writer or pq.ParquetWriter(sink, table.schema)
                    writer.write_table(table)
                    written += len(table)
                    self.pace.beat()
                if writer is not None:
                    writer.close()
            rows.append(written)
        # Wall-clock bounds of the work (time.time: comparable across the actors' processes), for
        # the scoring window the Summary reports beside the whole call.
        return {
            "rows": np.asarray(rows, dtype=np.int64),
            "started": np.full(len(rows), started),
            "ended": np.full(len(rows), time.time()),
        }

    def _read(self, chunk: Chunk) -> Iterator[tuple[pa.Array, np.ndarray]]:
        if self.plan.kind == "images":
            yield from self._read_images(chunk)
            return
        where = self.input.uri_of(chunk.path)
        offset = chunk.first_row
        for part in self._table_batches(chunk):
            ids = (
                part.column(self.plan.id_column)
                if self.plan.id_from_input
                else pa.array(np.arange(offset, offset + len(part), dtype=np.int64))
            )
            offset += len(part)
            X = features_of(part, self.features)
            check_finite(X, ids, self.features, where)
            yield ids, X

    def _table_batches(self, chunk: Chunk) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        columns = [*self.features, *([self.plan.id_column] if self.plan.id_from_input else [])]
        if self.plan.kind == "parquet":
            with self.input.fs.open_input_file(chunk.path) as handle:
                reader = pq.ParquetFile(handle)
                yield from reader.iter_batches(
                    self.cfg.batch_size, row_groups=chunk.row_groups, columns=columns
                )
            return
        assert self.plan.table_schema is not None  # planned from the parts' common schema
        batches = _csv_batches(self.input, chunk.path, self.plan.table_schema)
        table = pa.Table.from_batches(list(batches))
        yield from table.select(columns).to_batches(self.cfg.batch_size)

    def _read_images(self, chunk: Chunk) -> Iterator[tuple[pa.Array, np.ndarray]]:
        # lazy: imports torch, needed only on this path
        from raylife.inference.predict import image_to_array

        schema = self.predictor.artifact.schema
        root = self.input.path.rstrip("/") + "/"
        for start in range(0, len(chunk.images), self.cfg.batch_size):
            paths = chunk.images[start : start + self.cfg.batch_size]
            arrays = []
            for path in paths:
                with self.input.fs.open_input_stream(path) as handle:
                    payload = handle.read()
                arrays.append(
                    _image(lambda p=payload: image_to_array(p, schema), self.input.uri_of(path))
                )
            names = [p.removeprefix(root) for p in paths]
            yield pa.array(names, pa.string()), np.concatenate(arrays)


# --------------------------------------------------------------------------------------------------
# Output: staged, then published with the marker last


def marker_of(loc: Location) -> dict[str, Any] | None:
    """The _COMPLETE marker of an output (None: no complete output there)."""
    payload = storage.read_marker(loc)
    if payload is None:
        return None
    data: dict[str, Any] = json.loads(payload or b"{}")
    return data


def check_output(loc: Location, overwrite: bool) -> None:
    """Refuse a complete output (unless overwrite) and a folder that is not an output at all."""
    from pyarrow import fs as pafs

    info = loc.info()
    if info.type == pafs.FileType.NotFound:
        return
    if info.type == pafs.FileType.File:
        raise RaylifeError(f"output {loc.uri} is a file; pass a folder (or s3:// prefix)")
    done = marker_of(loc)
    if done is not None and not overwrite:
        raise RaylifeError(
            f"output {loc.uri} is already complete ({done.get('model')} {done.get('version')}, "
            f"{done.get('rows')} rows); pass --overwrite to replace it or choose another --output"
        )
    strangers = [p for p, _ in storage.list_files(loc) if not p.endswith(".parquet")]
    if done is None and strangers:
        raise RaylifeError(
            f"output {loc.uri} holds other files ({loc.uri_of(strangers[0])}); "
            "choose an empty or new --output"
        )


def publish(staging: Location, final: Location, marker: dict[str, Any]) -> None:
    """Make the staged parts the output, replacing what check_output let through (a complete
    output with --overwrite, or a failed publish's parts), the marker last."""
    storage.publish(staging, final, json.dumps(marker, indent=1).encode(), replace=True)


# --------------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class Summary:
    output: str
    model: str
    version: str
    rows: int
    files: int
    seconds: float
    """The whole call: loading and planning, actor start, scoring, publishing."""
    scoring_seconds: float
    """From the first chunk's start to the last chunk's end on the actors: the part that grows
    with the rows (seconds - scoring_seconds is the fixed cost)."""

    @property
    def rows_per_s(self) -> float:
        return self.rows / max(self.seconds, 1e-6)

    @property
    def scoring_rows_per_s(self) -> float:
        """The actors' rate. A small table can score within the clock's resolution: never / 0."""
        return self.rows / max(self.scoring_seconds, 1e-6)


def actor_options(cfg: BatchConfig) -> dict[str, Any]:
    """map_batches' resources: a fixed pool of cfg.actors, each 1 CPU (and 1 GPU with use_gpu)."""
    import ray.data

    # A GPU actor still reads and decodes its chunks on a CPU: it takes one of each.
    resources = {"num_cpus": 1, "num_gpus": 1} if cfg.use_gpu else {"num_cpus": 1}
    # A dead actor is restarted (Ray Data's default); its chunk is retried at most max_failures
    # times (Ray Data's default is forever: a chunk that always stalls would never end the run).
    return {
        "compute": ray.data.ActorPoolStrategy(size=cfg.actors),
        "max_task_retries": cfg.max_failures,
        **resources,
    }


def batch_predict(cfg: BatchConfig) -> Summary:
    """Check everything a user can get wrong, score on the actor pool, publish atomically."""
    # lazy: imports torch, pyarrow, needed only on this path
    from raylife.lifecycle.store import ModelStore

    started = time.monotonic()
    version, artifact = ModelStore(cfg.store_uri).load(cfg.model, cfg.version)
    source, output = locate(cfg.input, "input"), locate(cfg.output, "output")
    check_output(output, cfg.overwrite)
    planned = plan(cfg.input, artifact.schema, cfg.id_column)
    staging = storage.staging_of(output)
    try:
        written, scoring = _score(cfg, version, planned, artifact.schema.feature_names, staging)
        if written != planned.rows:  # a file changed after planning: publish nothing
            raise InputError(
                f"input {source.uri} changed while scoring ({planned.rows} rows planned, "
                f"{written} scored); run again on a stable input"
            )
        files = len(storage.list_files(staging))
        marker = {
            "model": cfg.model,
            "version": version,
            "rows": planned.rows,
            "files": files,
            "input": source.uri,
            "id_column": planned.id_column,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        check_output(output, cfg.overwrite)  # another run may have finished meanwhile
        publish(staging, output, marker)
    finally:
        storage.remove(staging)
    seconds = time.monotonic() - started
    return Summary(output.uri, cfg.model, version, planned.rows, files, seconds, scoring)


def _score(
    cfg: BatchConfig, version: str, planned: Plan, features: list[str], staging: Location
) -> tuple[int, float]:
    """Rows written into `staging` by the actor pool, one part file per chunk, and the scoring
    window in seconds (first chunk started to last chunk ended)."""
    # lazy: resolved at call time, so a stand-in for it (tests that prove no cluster starts) is the one called
    import ray.data

    from raylife.cluster import ensure_ray

    ensure_ray(num_cpus=cfg.actors)  # a local cluster: at least one CPU per actor
    staging.fs.create_dir(staging.path)
    items = [{"index": i, "chunk": json.dumps(c.__dict__)} for i, c in enumerate(planned.chunks)]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    scored = dataset.map_batches(
        Scorer,
        batch_size=1,
        batch_format="numpy",
        fn_constructor_args=(cfg, version, replace(planned, chunks=[]), features, staging.path),
        **actor_options(cfg),
    )
    try:
        done = list(scored.iter_rows())
    except Exception as exc:
        user_error = storage.user_error(exc)
        if user_error is None:
            raise
        raise user_error from None
    window = max(r["ended"] for r in done) - min(r["started"] for r in done)
    return sum(int(r["rows"]) for r in done), float(window)
