"""The reference profile of a model's data: what its inputs, its target and its predictions looked
like when it was trained, so that raylife.monitoring can tell when live traffic has moved.

Computed in the pass that fits preprocessing, from a uniform sample of the training rows that
merges across batches (bottom-k sampling: every row gets a pseudo-random key in [0, 1), a sample
keeps the k rows with the smallest keys, and the k smallest of two samples' union are again a
uniform sample of the union). The embedded path samples its training split at once; the streaming
path samples every batch and merges, so a table larger than memory gets the same kind of profile.

Per monitored value (a table's feature; an image's pixel mean and pixel standard deviation) it
keeps count, mean, std and the 101 percentiles of the sample (about 2 KB of JSON); for the target
and the predictions, class fractions or percentiles. The predictions' distribution is measured on
the validation split when a version is registered (with_predictions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SAMPLE_ROWS = 2000
"""Rows the reference keeps: a two-sample test against 500 live rows loses little beyond this."""
PERCENTILES = np.linspace(0.0, 100.0, 101)
IMAGE_VALUES = ["pixel_mean", "pixel_std"]
"""What a profile watches of an image: its brightness and contrast (raw pixel scale)."""


def monitored(X: np.ndarray, kind: str) -> np.ndarray:
    """The values a profile summarises per row, as (rows, values) float64: a table's features, or
    an image's pixel mean and pixel std. Live captures go through the same function."""
    flat = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    if kind == "image":
        return np.column_stack([flat.mean(axis=1), flat.std(axis=1)])
    return flat


def monitored_names(kind: str, feature_names: list[str]) -> list[str]:
    return list(IMAGE_VALUES) if kind == "image" else list(feature_names)


def random_keys(rows: int, seed: int) -> np.ndarray:
    """Sampling keys for rows held in memory (seeded: the same split gives the same profile)."""
    return np.random.default_rng(seed).random(rows)


def hash_keys(hashes: np.ndarray) -> np.ndarray:
    """Sampling keys from 64-bit row hashes (the streaming path's row keys), uniform in [0, 1)."""
    return (np.asarray(hashes, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / 2.0**53


@dataclass
class Sample:
    """A bottom-k uniform sample of rows: their keys, monitored values and targets."""

    keys: np.ndarray
    values: np.ndarray
    targets: np.ndarray
    """Class codes or label strings (classification), or values (regression)."""
    rows: int
    """Rows the sample was drawn from."""

    @classmethod
    def of(
        cls, values: np.ndarray, targets: np.ndarray, keys: np.ndarray, k: int = SAMPLE_ROWS
    ) -> Sample:
        keep = np.argsort(keys, kind="stable")[:k]
        return cls(
            np.asarray(keys, dtype=np.float64)[keep],
            np.asarray(values, dtype=np.float64)[keep],
            np.asarray(targets)[keep],
            len(keys),
        )

    def merge(self, other: Sample, k: int = SAMPLE_ROWS) -> Sample:
        if other.rows == 0:
            return self
        if self.rows == 0:
            return other
        merged = Sample.of(
            np.concatenate([self.values, other.values]),
            np.concatenate([self.targets, other.targets]),
            np.concatenate([self.keys, other.keys]),
            k,
        )
        merged.rows = self.rows + other.rows
        return merged

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": self.keys.tolist(),
            "values": self.values.tolist(),
            "targets": self.targets.tolist(),
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        keys = np.asarray(data["keys"], dtype=np.float64)
        values = np.asarray(data["values"], dtype=np.float64).reshape(len(keys), -1)
        return cls(keys, values, np.asarray(data["targets"]), int(data["rows"]))


@dataclass(frozen=True)
class Distribution:
    """One value's reference: percentiles of a number, or the fractions of classes."""

    kind: Literal["values", "classes"]
    count: int
    """Sampled rows behind it: the reference's size in a two-sample test."""
    percentiles: list[float] = field(default_factory=list)
    mean: float = 0.0
    std: float = 0.0
    fractions: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_values(cls, values: np.ndarray) -> Distribution:
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0:
            return cls("values", 0)
        return cls(
            "values",
            len(values),
            [float(v) for v in np.percentile(values, PERCENTILES)],
            float(values.mean()),
            float(values.std()),
        )

    @classmethod
    def of_classes(cls, labels: list[str], names: list[str]) -> Distribution:
        counts = {name: 0 for name in names}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        total = max(len(labels), 1)
        return cls("classes", len(labels), fractions={k: v / total for k, v in counts.items()})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "count": self.count}
        if self.kind == "values":
            out.update(percentiles=self.percentiles, mean=self.mean, std=self.std)
        else:
            out["fractions"] = self.fractions
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Distribution:
        return cls(**data)


@dataclass(frozen=True)
class Profile:
    """A version's reference: its monitored inputs, target and predictions as it was trained."""

    features: dict[str, Distribution]
    target: Distribution
    rows: int
    """Training rows the sample was drawn from."""
    predictions: Distribution | None = None
    """The version's predictions on the validation split (set when it is registered)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "features": {name: d.to_dict() for name, d in self.features.items()},
            "target": self.target.to_dict(),
            "predictions": self.predictions.to_dict() if self.predictions else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        predictions = data.get("predictions")
        return cls(
            {name: Distribution.from_dict(d) for name, d in data["features"].items()},
            Distribution.from_dict(data["target"]),
            int(data["rows"]),
            Distribution.from_dict(predictions) if predictions else None,
        )


def profile_of(sample: Sample, names: list[str], label_names: list[str] | None) -> Profile:
    """The profile of a training sample; label_names: a classifier's classes (targets are codes)."""
    features = {name: Distribution.of_values(sample.values[:, i]) for i, name in enumerate(names)}
    if label_names:
        labels = [t if isinstance(t, str) else label_names[int(t)] for t in sample.targets.tolist()]
        target = Distribution.of_classes(labels, label_names)
    else:
        target = Distribution.of_values(sample.targets)
    return Profile(features, target, sample.rows)


def predictions_distribution(
    labels: list[str] | None, values: np.ndarray | None, label_names: list[str] | None
) -> Distribution:
    """The distribution of a version's answers: predicted classes, or predicted values."""
    if label_names is not None and labels is not None:
        return Distribution.of_classes(labels, label_names)
    return Distribution.of_values(np.asarray(values, dtype=np.float64))
