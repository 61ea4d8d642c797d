"""PNG figures: learning curves, Tune trials, and a grid of MNIST test images with predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; chosen here, not at import of raylife
    import matplotlib.pyplot as plt

    return plt


def learning_curves(
    model: str,
    history: list[dict[str, float]],
    metric: str,
    path: Path,
    chosen_epoch: int | None = None,
) -> Path:
    """Train vs validation loss and primary metric per epoch; a line marks the promoted epoch."""
    plt = _pyplot()
    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in zip(axes, ("loss", metric), strict=True):
        for split in ("train", "val"):
            column = f"{split}_{key}"
            if column in frame:
                ax.plot(frame["epoch"], frame[column], label=split)
        if chosen_epoch is not None:
            ax.axvline(chosen_epoch, color="gray", linestyle="--", label="promoted checkpoint")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{model}: learning curves of the promoted trial")
    return _save(fig, path)


def tune_trials(
    model: str, histories: dict[str, pd.DataFrame], metric: str, best_trial: str | None, path: Path
) -> Path:
    """Validation metric per epoch of every trial; ASHA's early stops show as short lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for trial, frame in histories.items():
        if metric not in frame:
            continue
        is_best = trial == best_trial
        ax.plot(
            frame["epoch"],
            frame[metric],
            marker="o",
            markersize=3,
            linewidth=2.5 if is_best else 1,
            label=f"{trial}{' (best)' if is_best else ''}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{model}: Tune trials (ASHA)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def mnist_grid(
    images: np.ndarray, truth: list[str], predicted: list[str], path: Path, columns: int = 8
) -> Path:
    """Test digits with predicted (and true, when wrong) labels, as the tutorial shows."""
    plt = _pyplot()
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.35))
    for ax, image, true, pred in zip(np.ravel(axes), images, truth, predicted, strict=False):
        ax.imshow(image.reshape(28, 28), cmap="gray")
        ax.set_title(
            pred if pred == true else f"{pred} (true {true})",
            fontsize=8,
            color="black" if pred == true else "red",
        )
        ax.axis("off")
    for ax in np.ravel(axes)[len(images) :]:
        ax.axis("off")
    fig.suptitle("MNIST test images: predicted label")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path
