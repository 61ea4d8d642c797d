"""Learning tasks: the loss, the metrics and the prediction rule that go with a kind of output.

A task is plain torch (no Ray). Batch statistics are additive sums so that they can be summed over
batches and all-reduced over Ray Train workers before `finalize` turns them into metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

TaskName = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class Task:
    name: TaskName
    metric: Literal["accuracy", "rmse"]
    """Primary metric: selects checkpoints, Tune trials and the promoted model."""
    mode: Literal["max", "min"]
    """Direction of the primary metric, as Ray Train and Tune take it."""

    @property
    def higher_is_better(self) -> bool:
        return self.mode == "max"

    @property
    def is_classification(self) -> bool:
        return self.name != "regression"

    @property
    def target_dtype(self) -> torch.dtype:
        """Class indices for cross-entropy; floats for the logit (binary) and regression losses."""
        return torch.int64 if self.name == "multiclass" else torch.float32

    def is_better(self, value: float, best: float | None) -> bool:
        """Strictly better than `best` in this task's direction (anything beats None)."""
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best

    def meets(self, value: float, bar: float) -> bool:
        """At least as good as `bar` in this task's direction."""
        return value >= bar if self.higher_is_better else value <= bar

    def worst_acceptable(self, reference: float, absolute: float, relative: float) -> float:
        """The worst value within `absolute + relative * |reference|` of `reference`, on the
        worse side in this task's direction (the promotion gate's bar)."""
        slack = absolute + relative * abs(reference)
        return reference - slack if self.higher_is_better else reference + slack

    def gain(self, value: float, reference: float) -> float:
        """How much better `value` is than `reference` (negative when worse), in metric units."""
        return value - reference if self.higher_is_better else reference - value

    def objective(self, metrics: dict[str, float]) -> float:
        """What selects checkpoints, trials and promotions (direction: `mode`).

        The primary metric, with accuracy ties broken by lower loss: on small validation splits
        (Iris: 23 rows) many epochs tie on accuracy, and the lower-loss one generalises better.
        """
        if not self.is_classification:
            return metrics["rmse"]
        # 1e-6 x (loss capped at 10) < 1e-4: below one example's worth of accuracy on any
        # validation split under 10,000 rows, so the loss only ever breaks ties.
        return metrics["accuracy"] - 1e-6 * min(metrics["loss"], 10.0)

    def output_size(self, n_classes: int) -> int:
        """Width of the model's last layer: one logit for binary and regression."""
        return n_classes if self.name == "multiclass" else 1

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Logits in, matching loss: no softmax/sigmoid inside the model (the tutorial's defect).
        if self.name == "multiclass":
            return nn.functional.cross_entropy(outputs, targets.long())
        if self.name == "binary":
            return nn.functional.binary_cross_entropy_with_logits(
                outputs.squeeze(1), targets.float()
            )
        return nn.functional.mse_loss(outputs.squeeze(1), targets.float())

    def batch_sums(
        self, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        """[n, loss*n, correct or squared error, absolute error] for one batch."""
        n = float(targets.shape[0])
        if not self.is_classification:
            err = outputs.squeeze(1).detach() - targets.float()
            return torch.tensor([n, loss.item() * n, float((err**2).sum()), float(err.abs().sum())])
        predicted = self.predict_labels(outputs.detach())
        correct = float((predicted == targets.long()).sum())
        return torch.tensor([n, loss.item() * n, correct, 0.0])

    def finalize(self, sums: torch.Tensor, target_std: float = 1.0) -> dict[str, float]:
        """Metrics from summed batch statistics. Regression errors are scaled back to target units."""
        n, loss_sum, third, fourth = (float(v) for v in sums)
        n = max(n, 1.0)
        metrics = {"loss": loss_sum / n}
        if not self.is_classification:
            metrics["rmse"] = math.sqrt(third / n) * target_std
            metrics["mae"] = fourth / n * target_std
        else:
            metrics["accuracy"] = third / n
        return metrics

    def predict_labels(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.name == "multiclass":
            return outputs.argmax(dim=1)
        return (outputs.squeeze(1) > 0).long()

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (n, classes); for binary the two columns are [P(0), P(1)]."""
        if self.name == "multiclass":
            return torch.softmax(outputs, dim=1)
        p1 = torch.sigmoid(outputs.squeeze(1))
        return torch.stack([1 - p1, p1], dim=1)


TASKS: dict[str, Task] = {
    "binary": Task("binary", "accuracy", "max"),
    "multiclass": Task("multiclass", "accuracy", "max"),
    "regression": Task("regression", "rmse", "min"),
}
