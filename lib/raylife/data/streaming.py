"""Streaming data: tables and PNG folders of any size, read through Ray Data, never collected.

`--data` naming a folder, a glob or a file of at least STREAM_MIN_BYTES (local or s3://) streams:
  1. `resolve` lists the files; `check_tables` / `check_images` read only Parquet footers, CSV first
     blocks and PNG headers, so a bad input fails in one line naming the file before any worker.
  2. Rows go to train/val/test by a seeded hash of their `row_id` column (or of their feature
     values; an image's path): the same rows land in the same split whatever the partitioning.
     Not stratified: at the sizes that stream, hashing gives each split the class mix of the whole
     within noise (small tables keep the in-memory, stratified path of raylife.data.contracts).
  3. One distributed pass (`map_batches` partial moments, merged here) fits the preprocessing on
     the training rows, finds the labels, counts the splits and finds NaN/inf, naming the file.
  4. The training rows go to the TorchTrainer as `datasets=`; each worker iterates its shard
     (`iter_torch_batches`) and preprocesses its batches with the stored Preprocessing, so the
     artifact, serving and `raylife predict` are exactly those of the in-memory path.
Validation and test rows are collected in the same single pass, up to MAX_VAL_ROWS and
MAX_TEST_ROWS (the whole splits below that): validation every epoch, the test score, the gate
and `raylife evaluate` use them as they use the in-memory splits.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from raylife import storage
from raylife.data import profile
from raylife.data.contracts import InputSchema, PreparedData, Preprocessing, Split
from raylife.errors import InputError, RaylifeError

if TYPE_CHECKING:
    import torch

    from raylife.catalog.specs import ModelSpec
    from raylife.config import DataConfig
    from raylife.tasks import Task

STREAM_MIN_BYTES = 64 * 2**20
"""A single table file this large streams; smaller ones load in memory (stratified splits)."""
MAX_TEST_ROWS = 100_000
"""Test rows kept in the driver for the test score, the gate and `raylife evaluate`."""
MAX_VAL_ROWS = 50_000
"""Validation rows scored every epoch (in memory, sharded by rank as for small data): a fixed
sample, because a streamed validation pass per epoch costs a Ray Data execution per epoch."""
ID_COLUMN = "row_id"
"""A column of this name is the rows' identity: split by it, never a feature."""
PATH_COLUMN = "path"
READ_TASKS = 2
"""Ray Data tasks at once per operator. They take no logical CPU: the training workers hold
those, and a task that waits for a CPU the trainer holds would stall the run forever."""


def _task_args(read: bool = False) -> dict[str, Any]:
    if read:  # the read functions still take `concurrency`; map_batches wants `compute`
        return {"num_cpus": 0, "concurrency": READ_TASKS}
    from ray.data import TaskPoolStrategy

    return {"num_cpus": 0, "compute": TaskPoolStrategy(size=READ_TASKS)}


SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
Format = Literal["parquet", "csv", "images"]
_SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".png": "images",
}


# --------------------------------------------------------------------------------------------------
# 1. Files and their schema, checked on the driver


@dataclass(frozen=True)
class Files:
    """The files a --data URI names, on their pyarrow filesystem."""

    uri: str
    filesystem: Any
    paths: list[str]
    format: Format
    total_bytes: int


def wants_streaming(source: str) -> bool:
    """Whether a --data value streams: a folder, a glob, or a big file (local or s3://)."""
    if source in ("embedded", "torchvision") or source.startswith(("http://", "https://")):
        return False
    loc = storage.locate(source, "data")
    if storage.is_glob(loc.path):
        return True
    from pyarrow import fs as pafs

    try:
        info = loc.info()
    except OSError as exc:  # S3: no such bucket, no credentials, endpoint down
        raise RaylifeError(f"cannot read {source}: {exc}; check the URI and credentials") from exc
    return info.type == pafs.FileType.Directory or (
        info.type == pafs.FileType.File and (info.size or 0) >= STREAM_MIN_BYTES
    )


_SHOWN = {"parquet": "Parquet", "csv": "CSV", "images": "PNG"}


def resolve(uri: str, flag: str = "--data") -> Files:
    """The data files under a file, folder or glob (hidden and `_` entries skipped), for
    training (`--data`) and batch inference (`--input`) alike."""
    loc = storage.locate(uri, "data")
    listed = _list(loc, uri)
    formats = {_SUFFIXES.get(os.path.splitext(p)[1].lower()) for p, _ in listed} - {None}
    if not formats:
        raise InputError(
            f"no Parquet, CSV or PNG files at {uri}; point {flag} at a file, folder or glob of "
            ".parquet/.csv tables or a folder of class folders of .png images"
        )
    if len(formats) > 1:
        raise InputError(
            f"{uri} mixes {' and '.join(sorted(_SHOWN[str(f)] for f in formats))} files; "
            f"point {flag} at one kind"
        )
    kind: Format = formats.pop()  # type: ignore[assignment]
    chosen = [(p, s) for p, s in listed if _SUFFIXES.get(os.path.splitext(p)[1].lower()) == kind]
    return Files(uri, loc.fs, [p for p, _ in chosen], kind, sum(s for _, s in chosen))


def _list(loc: storage.Location, uri: str) -> list[tuple[str, int]]:
    found = storage.find_files(loc)
    if found is None:
        raise InputError(f"data path {uri!r} not found; pass an existing file, folder or glob")
    if not found:
        raise InputError(f"no files at {uri}; pass a folder or glob that holds the data")
    return found


@dataclass(frozen=True)
class TableSchema:
    """The columns a streamed table trains on, checked across all of its files."""

    features: list[str]
    target: str
    id_column: str | None


def common_schema(files: Files) -> tuple[Any, str]:
    """The pyarrow schema every part shares (Parquet footers, CSV first blocks) and the first
    part's path: a part that cannot be read or differs is named in one line with the fix."""
    first, first_path = file_schema(files, files.paths[0]), files.paths[0]
    for path in files.paths[1:]:
        schema = file_schema(files, path)
        if not schema.equals(first):
            raise InputError(
                f"{path} has columns {_columns(schema)} but {first_path} has {_columns(first)}; "
                "write every part with the same columns and types"
            )
    return first, first_path


def check_tables(files: Files, target: str | None, id_column: str | None = None) -> TableSchema:
    """The parts' common schema, with the target and numeric features; one line naming the file
    and the fix otherwise. id_column: the declaration's (`[data] id_column`), which must exist;
    without one, a column named ID_COLUMN is the rows' identity by convention."""
    import pyarrow as pa

    if not target:
        raise RaylifeError("a data table needs its target column: pass --target COLUMN")
    first, first_path = common_schema(files)
    if target not in first.names:
        raise RaylifeError(
            f"target column {target!r} not in {first_path}; columns are: {', '.join(first.names)}"
        )
    if id_column is not None and id_column not in first.names:
        raise RaylifeError(
            f"id column {id_column!r} not in {first_path}; columns are: {', '.join(first.names)}"
        )
    if id_column is None:
        id_column = ID_COLUMN if ID_COLUMN in first.names else None
    features = [n for n in first.names if n not in (target, id_column)]
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
    bad = [n for n in features if not any(ok(first.field(n).type) for ok in numeric)]
    if bad:
        raise RaylifeError(
            f"non-numeric feature column(s) {bad} in {first_path}; encode them as numbers"
        )
    if not features:
        raise RaylifeError(f"{first_path} has no feature columns besides {target!r}")
    return TableSchema(features, target, id_column)


def file_schema(files: Files, path: str) -> Any:
    """One part's schema, from its Parquet footer or its CSV first block only."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if files.format == "parquet":
            with files.filesystem.open_input_file(path) as handle:
                return pq.read_schema(handle)
        with files.filesystem.open_input_stream(path) as handle:
            return pacsv.open_csv(handle).schema
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for corrupt files
        raise InputError(
            f"{path} is not a readable {files.format} file ({' '.join(str(exc).split())[:160]}); "
            "re-write it or remove it"
        ) from exc


def _columns(schema: Any) -> str:
    return "[" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "]"


@dataclass(frozen=True)
class ImageFolder:
    """A folder of class folders of same-sized PNGs: the label is the parent folder's name."""

    labels: list[str]
    shape: list[int]
    """[channels, height, width] of every image."""


def check_images(files: Files) -> ImageFolder:
    """Every PNG's header (not its pixels): readable, all of one size (read as grayscale), in two
    or more class folders."""
    from PIL import Image

    labels = sorted({_label_of(p) for p in files.paths})
    if len(labels) < 2:
        raise RaylifeError(
            f"{files.uri} has images in {len(labels)} class folder(s); put each class's PNGs "
            "in a folder named after the class (two or more)"
        )
    first_shape: list[int] | None = None
    for path in files.paths:
        try:
            with files.filesystem.open_input_file(path) as handle, Image.open(handle) as image:
                shape = [1, image.height, image.width]  # read_images(mode="L"): grayscale
        except Exception as exc:  # PIL raises many types for corrupt files
            raise RaylifeError(
                f"{path} is not a readable PNG ({exc}); re-write or remove it"
            ) from exc
        if first_shape is not None and shape != first_shape:
            raise RaylifeError(
                f"{path} is {shape[2]}x{shape[1]} pixels but {files.paths[0]} is "
                f"{first_shape[2]}x{first_shape[1]}: resize it or remove it"
            )
        first_shape = first_shape or shape
    assert first_shape is not None
    return ImageFolder(labels, first_shape)


def _label_of(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


# --------------------------------------------------------------------------------------------------
# 2. Seeded hash splits


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of 64-bit keys (wraps on purpose)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def row_keys(columns: Mapping[str, np.ndarray], key_columns: list[str]) -> np.ndarray:
    """One uint64 key per row from its key columns (ids, feature values or path strings)."""
    n = len(next(iter(columns.values())))
    h = np.zeros(n, dtype=np.uint64)
    for name in key_columns:
        values = np.asarray(columns[name])
        if values.dtype.kind in "OUS":  # strings: a stable digest, not Python's salted hash
            words = np.fromiter(
                (
                    int.from_bytes(
                        hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little"
                    )
                    for v in values
                ),
                dtype=np.uint64,
                count=n,
            )
        else:
            words = values.astype(np.float64).view(np.uint64)  # ids and features alike
        h = _mix(h ^ words)
    return h


def split_codes(
    keys: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) per row key: a seeded uniform draw from the key."""
    seed_word = _mix(np.array([seed + 0x5EED], dtype=np.uint64))[0]
    u = (_mix(keys ^ seed_word) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.where(u < test_fraction, 2, np.where(u < test_fraction + val_fraction, 1, 0)).astype(
        np.int8
    )


# --------------------------------------------------------------------------------------------------
# 3. Statistics: partial moments per batch, merged (Chan et al.), label counts, bad values


@dataclass
class Moments:
    """Count, mean and sum of squared deviations per column: mergeable, numerically stable."""

    count: float = 0.0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0:
            return cls()
        mean = values.mean(axis=0)
        return cls(float(len(values)), mean, ((values - mean) ** 2).sum(axis=0))

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / n
        return Moments(n, mean, m2)

    @property
    def std(self) -> np.ndarray:
        std = np.sqrt(self.m2 / max(self.count, 1.0))
        return np.where(std == 0, 1.0, std)  # constant columns stay constant


@dataclass
class Plan:
    """What every Ray Data task and worker needs to split and preprocess a batch (picklable)."""

    kind: Literal["tabular", "image"]
    features: list[str]
    target: str
    key_columns: list[str]
    seed: int
    val_fraction: float
    test_fraction: float
    shape: list[int]
    regression: bool
    labels: list[str] | None = None
    preprocessing: Preprocessing | None = None

    def keys(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        return row_keys(batch, self.key_columns)

    def codes(self, batch: Mapping[str, np.ndarray], keys: np.ndarray | None = None) -> np.ndarray:
        """Each row's split (0 train, 1 validation, 2 test); `keys`: the batch's, if computed."""
        keys = self.keys(batch) if keys is None else keys
        return split_codes(keys, self.seed, self.val_fraction, self.test_fraction)

    def features_of(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Raw features as (n, *shape) float64: table columns stacked, or image pixels."""
        if self.kind == "image":
            pixels = np.asarray(batch["image"], dtype=np.float64)
            return pixels.reshape(len(pixels), *self.shape)
        return np.column_stack([np.asarray(batch[c], dtype=np.float64) for c in self.features])

    def raw_target(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.kind == "image":
            return np.array([_label_of(str(p)) for p in batch[PATH_COLUMN]])
        return np.asarray(batch[self.target])

    def target_codes(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Class codes into `labels` (sorted as strings, as the in-memory path), or floats."""
        raw = self.raw_target(batch)
        if self.regression:
            return raw.astype(np.float64)
        assert self.labels is not None
        names = np.asarray(self.labels)
        as_str = raw.astype(str)
        codes = np.searchsorted(names, as_str)
        unknown = (codes >= len(names)) | (names[np.minimum(codes, len(names) - 1)] != as_str)
        if unknown.any():
            raise RaylifeError(f"label {as_str[unknown][0]!r} was not in the training split")
        return codes.astype(np.int64)


def batch_stats(batch: dict[str, np.ndarray], plan: Plan) -> dict[str, np.ndarray]:
    """One row of partial statistics of one batch (a Ray Data map_batches function)."""
    keys = plan.keys(batch)
    codes = plan.codes(batch, keys)
    X = plan.features_of(batch)
    flat = X.reshape(len(X), -1)
    bad = ~np.isfinite(flat).all(axis=1)
    train = (codes == 0) & ~bad
    values = flat[train] * (1 / 255.0 if plan.kind == "image" else 1.0)
    if plan.kind == "image":
        values = values.reshape(-1, 1)  # one statistic for all pixels
    moments = Moments.of(values)
    raw_target = plan.raw_target(batch)
    target = Moments.of(raw_target[train].astype(np.float64)) if plan.regression else Moments()
    labels = sorted({str(v) for v in raw_target}) if not plan.regression else []
    where = ""
    if bad.any():
        where = str(batch[PATH_COLUMN][np.flatnonzero(bad)[0]]) if PATH_COLUMN in batch else "?"
    summary = {
        "splits": np.bincount(codes, minlength=3).tolist(),
        "moments": [
            moments.count,
            np.atleast_1d(moments.mean).tolist(),
            np.atleast_1d(moments.m2).tolist(),
        ],
        "target": [
            target.count,
            np.atleast_1d(target.mean).tolist(),
            np.atleast_1d(target.m2).tolist(),
        ],
        "labels": labels,
        "bad_rows": int(bad.sum()),
        "bad_file": where,
        # sampling keys apart from the split's draw: a row's split and its place in the sample
        # are independent
        "sample": profile.Sample.of(
            profile.monitored(X[train], plan.kind),
            raw_target[train] if not plan.regression else raw_target[train].astype(np.float64),
            profile.hash_keys(_mix(keys[train] ^ _SAMPLE_SALT)),
        ).to_json(),
    }
    return {"summary": np.array([json.dumps(summary)])}


_SAMPLE_SALT = np.uint64(0x5A3B1E)


@dataclass
class Stats:
    features: Moments
    target: Moments
    labels: list[str]
    splits: list[int]
    bad_rows: int
    bad_file: str
    sample: profile.Sample | None = None
    """A uniform sample of the training rows, for the reference profile."""


def merge_stats(summaries: list[str]) -> Stats:
    """The whole dataset's statistics from the per-batch summaries of batch_stats."""
    out = Stats(Moments(), Moments(), [], [0, 0, 0], 0, "")
    labels: set[str] = set()
    for text in summaries:
        part = json.loads(text)
        out.features = out.features.merge(_moments(part["moments"]))
        out.target = out.target.merge(_moments(part["target"]))
        labels.update(part["labels"])
        out.splits = [a + b for a, b in zip(out.splits, part["splits"], strict=True)]
        out.bad_rows += part["bad_rows"]
        out.bad_file = out.bad_file or part["bad_file"]
        sample = profile.Sample.from_json(part["sample"])
        out.sample = sample if out.sample is None else out.sample.merge(sample)
    out.labels = sorted(labels)
    return out


def _moments(triple: list[Any]) -> Moments:
    count, mean, m2 = triple
    return Moments(
        float(count), np.asarray(mean, dtype=np.float64), np.asarray(m2, dtype=np.float64)
    )


def preprocessing_of(stats: Stats, plan: Plan) -> Preprocessing:
    """The same Preprocessing the in-memory path fits (population std, zero std -> 1)."""
    target: dict[str, float] = {}
    if plan.regression:
        target = {
            "target_mean": float(stats.target.mean[0]),
            "target_std": float(stats.target.std[0]),
        }
    if plan.kind == "image":
        return Preprocessing(
            "normalize_image",
            [float(stats.features.mean[0])],
            [float(stats.features.std[0])],
            scale=1 / 255.0,
        )
    return Preprocessing(
        "standardize", stats.features.mean.tolist(), stats.features.std.tolist(), **target
    )


# --------------------------------------------------------------------------------------------------
# 4. Datasets, split and preprocessed in the workers


def read_dataset(uri: str, files: Files | None = None, paths: bool = True) -> Any:
    """A Ray Data dataset of the Parquet/CSV/PNG files at `uri` (a file, folder or glob, local or
    s3://), checked by `resolve` first. paths=True adds each row's file as a `path` column, which
    error messages name. Shared by training and batch inference."""
    import ray.data

    files = files or resolve(uri)
    # Ray 2.60's V2 Parquet reader lists files in a task that needs a whole logical CPU, which a
    # TorchTrainer holding every CPU never frees (the run hangs); V1 lists here, in the driver.
    ray.data.DataContext.get_current().use_datasource_v2 = False
    if files.format == "parquet":
        return ray.data.read_parquet(
            files.paths, filesystem=files.filesystem, include_paths=paths, **_task_args(read=True)
        )
    if files.format == "csv":
        return ray.data.read_csv(
            files.paths, filesystem=files.filesystem, include_paths=paths, **_task_args(read=True)
        )
    return ray.data.read_images(
        files.paths,
        filesystem=files.filesystem,
        include_paths=True,
        mode="L",
        **_task_args(read=True),
    )


def keep_split(batch: dict[str, np.ndarray], plan: Plan, code: int) -> dict[str, np.ndarray]:
    """The rows of one split (a map_batches function)."""
    mask = plan.codes(batch) == code
    return {name: np.asarray(values)[mask] for name, values in batch.items()}


@dataclass
class StreamedData:
    """The Ray datasets of a streaming source and how to turn their batches into tensors."""

    datasets: dict[str, Any]
    """"train": the lazy Ray dataset of the training rows (TorchTrainer `datasets=`)."""
    plan: Plan

    def batches(
        self,
        shard: Any,
        batch_size: int,
        task: Task,
        device: torch.device,
        seed: int,
        shuffle: bool,
    ) -> StreamBatches:
        return StreamBatches(shard, self.plan, batch_size, task, device, seed if shuffle else None)


class StreamBatches:
    """Re-iterable (X, y) tensors of a dataset or a worker's shard, one pass per epoch."""

    def __init__(
        self, source: Any, plan: Plan, batch_size: int, task: Task, device: Any, seed: int | None
    ) -> None:
        self.source, self.plan, self.batch_size = source, plan, batch_size
        self.task, self.device, self.seed, self.epoch = task, device, seed, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.epoch += 1
        shuffle = {}
        if self.seed is not None:  # a fresh, seeded local shuffle every epoch
            shuffle = {
                "local_shuffle_buffer_size": max(self.batch_size * 8, 1024),
                "local_shuffle_seed": self.seed * 1000 + self.epoch,
            }
        collate = _collate_class()(self.plan, self.task)
        for X, y in self.source.iter_torch_batches(
            batch_size=self.batch_size, collate_fn=collate, **shuffle
        ):
            yield X.to(self.device), y.to(self.device)


def _collate_class() -> type:
    """A NumpyBatchCollateFn (imported here: ray.data is heavy) that preprocesses a batch."""
    from ray.data.collate_fn import NumpyBatchCollateFn

    class Collate(NumpyBatchCollateFn):
        def __init__(self, plan: Plan, task: Task) -> None:
            self.plan, self.task = plan, task

        def __call__(self, batch: dict[str, np.ndarray]) -> Any:  # CollatedData: (X, y)
            return collate(batch, self.plan, self.task)

    return Collate


def collate(
    batch: Mapping[str, np.ndarray], plan: Plan, task: Task
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-ready (X, y) of a raw batch: the artifact's Preprocessing, as serving applies it."""
    import torch

    assert plan.preprocessing is not None
    X = plan.preprocessing.transform(plan.features_of(batch))
    y = plan.preprocessing.transform_target(plan.target_codes(batch))
    return torch.from_numpy(X), torch.as_tensor(y, dtype=task.target_dtype)


def prepare_streaming(spec: ModelSpec, cfg: DataConfig) -> PreparedData:
    """raylife.data.prepare.prepare for a streaming source: checks, one statistics pass, lazy datasets."""
    # lazy: resolved at call time, so a stand-in for it (tests that prove no cluster starts) is the one called
    from raylife.cluster import ensure_ray

    files = resolve(cfg.source)
    plan = _plan(spec, cfg, files)
    ensure_ray()
    dataset = read_dataset(cfg.source, files, paths=files.format != "images")
    stats = _fit(dataset, plan, cfg.source)
    plan.labels = stats.labels if not plan.regression else None
    plan.preprocessing = preprocessing_of(stats, plan)
    train = dataset.map_batches(
        keep_split,
        fn_kwargs={"plan": plan, "code": SPLIT_CODES["train"]},
        batch_format="numpy",
        batch_size=None,  # whole blocks, fused with the read
        **_task_args(),
    )
    train_head, val_head, test_raw = _collect(dataset, plan, [256, MAX_VAL_ROWS, MAX_TEST_ROWS])
    return PreparedData(
        train=_transformed(train_head, plan.preprocessing),
        val=_transformed(val_head, plan.preprocessing),
        test=_transformed(test_raw, plan.preprocessing),
        test_raw=test_raw,
        preprocessing=plan.preprocessing,
        schema=InputSchema(
            kind=plan.kind,
            feature_names=plan.features if plan.kind == "tabular" else [],
            shape=plan.shape,
            example=[float(v) for v in train_head.X[0].reshape(-1)],
        ),
        label_names=plan.labels,
        provenance={
            "source": cfg.source,
            "origin": cfg.source,
            "streamed": True,
            "files": len(files.paths),
            "rows": dict(zip(SPLIT_CODES, stats.splits, strict=True)),
            "test_rows_scored": len(test_raw),
            "split_seed": cfg.seed,
            "sha256": _listing_digest(files, cfg),
        },
        stream=StreamedData({"train": train}, plan),
        profile=profile.profile_of(
            stats.sample, profile.monitored_names(plan.kind, plan.features), plan.labels
        )
        if stats.sample is not None
        else None,
    )


def _plan(spec: ModelSpec, cfg: DataConfig, files: Files) -> Plan:
    split = (cfg.seed, cfg.val_fraction, cfg.test_fraction)
    regression = spec.task == "regression"
    if files.format == "images":
        if spec.input_kind != "image":
            raise RaylifeError(f"{cfg.source} holds images; {spec.name} takes tables")
        folder = check_images(files)
        return Plan("image", [], "", [PATH_COLUMN], *split, folder.shape, regression)
    if spec.input_kind != "tabular":
        raise RaylifeError(
            f"{spec.name} takes images: point --data at a folder of PNG class folders"
        )
    declared = spec.data.id_column if cfg.source == spec.data.uri else None
    table = check_tables(files, cfg.target, declared)
    keys = [table.id_column] if table.id_column else table.features
    return Plan(
        "tabular", table.features, table.target, keys, *split, [len(table.features)], regression
    )


def _fit(dataset: Any, plan: Plan, uri: str) -> Stats:
    try:
        rows = dataset.map_batches(
            batch_stats,
            fn_kwargs={"plan": plan},
            batch_format="numpy",
            batch_size=None,
            **_task_args(),
        ).take_all()
    except Exception as exc:  # Ray wraps errors of its tasks
        raise RaylifeError(
            f"cannot read {uri}: {storage.root_cause(exc)}; check the files there"
        ) from exc
    stats = merge_stats([str(r["summary"]) for r in rows])
    if stats.bad_rows:
        raise RaylifeError(
            f"{stats.bad_rows} row(s) have NaN/inf feature values (first in {stats.bad_file}); "
            "clean or drop them"
        )
    if stats.splits[0] == 0:
        raise RaylifeError("no training rows: the data is empty or too small to split")
    if not plan.regression and len(stats.labels) < 2:
        raise RaylifeError(
            f"target {plan.target!r} has one class only; a classifier needs two or more"
        )
    return stats


def _collect(dataset: Any, plan: Plan, limits: list[int]) -> list[Split]:
    """Up to limits[code] raw rows of each split (train, val, test), in the driver, from one
    pass that stops as soon as every split has its rows."""
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in limits]
    seen = [0 for _ in limits]
    for batch in dataset.iter_batches(batch_size=4096, batch_format="numpy"):
        codes, X, y = plan.codes(batch), plan.features_of(batch), plan.target_codes(batch)
        for code, limit in enumerate(limits):
            chosen = np.flatnonzero(codes == code)[: limit - seen[code]]
            parts[code].append((X[chosen], y[chosen]))
            seen[code] += len(chosen)
        if seen == limits:
            break
    return [
        Split(np.concatenate([X for X, _ in p]), np.concatenate([y for _, y in p])) for p in parts
    ]


def _transformed(part: Split, pre: Preprocessing) -> Split:
    return Split(pre.transform(part.X), pre.transform_target(part.y))


def _listing_digest(files: Files, cfg: DataConfig) -> str:
    """Identity of the streamed data: its files, their sizes and the split settings."""
    infos = files.filesystem.get_file_info(files.paths)
    listing = [(i.path, i.size, str(i.mtime)) for i in infos]
    settings = [cfg.seed, cfg.val_fraction, cfg.test_fraction]
    return hashlib.sha256(json.dumps([listing, settings]).encode()).hexdigest()
