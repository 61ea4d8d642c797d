"""Predictor: a loaded, verified artifact that turns raw inputs into predictions. No Ray needed."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylife.data.contracts import InputSchema, validate_rows
from raylife.errors import InputError
from raylife.lifecycle.artifact import Artifact
from raylife.tasks import TASKS


@dataclass
class Predictions:
    """A batch's answers as arrays: regression `values`, or classification `labels` (indices into
    the label names) and `probabilities` (n, classes), rounded to 6 decimals as every answer is."""

    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    probabilities: np.ndarray | None = None


@dataclass
class Predictor:
    artifact: Artifact
    version: str
    device: str = "cpu"
    """Where the forward pass runs ("cuda" on a GPU replica); answers always come back to the CPU."""

    def __post_init__(self) -> None:
        self.module = self.artifact.build_module().to(self.device)
        self.task = TASKS[self.artifact.task]

    @classmethod
    def from_store(
        cls, store: Any, model: str, version: str | None = None, device: str = "cpu"
    ) -> Predictor:
        resolved, artifact = store.load(model, version)
        return cls(artifact, resolved, device)

    @torch.no_grad()
    def predict_batch(self, X: np.ndarray) -> Predictions:
        """Raw (unpreprocessed) inputs of shape (n, *schema.shape) -> answers as arrays: the
        vectorized path (batch inference) that predict_array turns into one dict per row."""
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are refused below
            scaled = self.artifact.preprocessing.transform(X)
        finite = np.isfinite(scaled.reshape(len(scaled), -1)).all(axis=1)
        if not finite.all():
            raise InputError(
                f"row {int(np.argmin(finite))}: values too large for this model (not finite after "
                "scaling to float32); send values in the range of the training data"
            )
        features = torch.from_numpy(scaled).to(self.device)
        outputs = self.module(features).cpu()
        if not self.task.is_classification:
            values = self.artifact.preprocessing.inverse_target(outputs.squeeze(1).double().numpy())
            return Predictions(values=np.asarray(values, dtype=np.float64))
        probabilities = self.task.probabilities(outputs).numpy()
        return Predictions(
            labels=probabilities.argmax(axis=1),
            probabilities=probabilities.astype(np.float64).round(6),
        )

    def predict_array(self, X: np.ndarray) -> list[dict[str, Any]]:
        """Raw (unpreprocessed) inputs of shape (n, *schema.shape) -> one answer per row."""
        answers = self.predict_batch(X)
        if answers.probabilities is None:
            return [{"value": float(v)} for v in answers.values]
        names = self.label_names
        return [
            {
                "label": names[int(i)],
                "probabilities": {name: float(v) for name, v in zip(names, p, strict=True)},
            }
            for i, p in zip(answers.labels, answers.probabilities, strict=True)
        ]

    @property
    def label_names(self) -> list[str]:
        return self.artifact.label_names or []

    def predict_rows(self, rows: Any) -> list[dict[str, Any]]:
        """Rows as lists of numbers or dicts keyed by feature name (validated against the schema)."""
        return self.predict_array(validate_rows(rows, self.artifact.schema))

    def predict_image(self, image: bytes | str | Path) -> dict[str, Any]:
        """One PNG (or any Pillow-readable image) of exactly the model's height x width."""
        return self.predict_array(image_to_array(image, self.artifact.schema))[0]


def image_to_array(image: bytes | str | Path, schema: InputSchema) -> np.ndarray:
    """Grayscale pixels 0..255 as (1, *shape). Wrong sizes are refused, not silently resized."""
    from PIL import Image, UnidentifiedImageError

    if not schema.is_image:
        raise InputError("this model takes feature rows, not images; send --input rows instead")
    height, width = schema.shape[1], schema.shape[2]
    try:
        source = io.BytesIO(image) if isinstance(image, bytes) else Path(image)
        with Image.open(source) as img:
            # The header's size is checked before decoding: a small upload may declare a huge image
            # (a decompression bomb), and decoding it would take the replica's memory.
            if img.size != (width, height):
                raise InputError(
                    f"image is {img.size[0]}x{img.size[1]} pixels; the model takes {width}x{height} "
                    "grayscale (white digit on black), resize it first"
                )
            pixels = np.asarray(img.convert("L"), dtype=np.float64)
    except FileNotFoundError as exc:
        raise InputError(f"image file {image!s} not found; pass an existing PNG path") from exc
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read the image ({exc}); send a PNG file") from exc
    return pixels.reshape(1, *schema.shape)
