"""The data contracts every stage shares: raw data, splits, preprocessing fitted on train, the input
schema, the prepared data of a run, seeded cuts, and prediction-input validation.

This module depends on nothing above it (errors only), so sources, streaming, the catalogue,
training, the artifact and serving can all import it without a cycle.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from raylife.errors import InputError, RaylifeError

# pandas and scikit-learn are imported where they are used: Ray Train workers import this module
# to unpickle the prepared data, and those imports would add ~1 s to every worker's start.
if TYPE_CHECKING:
    from raylife.config import DataConfig
    from raylife.data.profile import Profile

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

    def example_batch(self, rows: int = 1) -> np.ndarray:
        """The raw example repeated `rows` times, shaped as a batch (n, *shape)."""
        one = np.asarray(self.example, dtype=np.float64).reshape(1, *self.shape)
        return np.repeat(one, rows, axis=0)

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
    """A streaming source's raylife.data.streaming.StreamedData: workers iterate its Ray dataset of the
    training rows (train above is then a small sample; val and test are capped samples)."""
    profile: Profile | None = None
    """The training rows' reference profile (raylife.data.profile), fitted beside preprocessing."""


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
