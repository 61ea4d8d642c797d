"""The promotion gate: is a candidate no worse than the champion on the same held-out test split,
within the tolerance its registry entry allows?

Both sides are scored on the candidate's test split. Stored test metrics are used when the two
artifacts' splits are the same (same data sha256, split seed and test fraction); otherwise the
champion is re-evaluated on the candidate's test rows, through its own preprocessing as serving
would. When those rows cannot be rebuilt (the data is gone or changed), the gate cannot decide and
says so (GateUnavailable); `--force` is the way past it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from raylife.catalog.lookup import get_spec
from raylife.data.contracts import PreparedData
from raylife.errors import RaylifeError
from raylife.lifecycle.artifact import Artifact
from raylife.lifecycle.evaluate import evaluate_artifact, test_data_for


class GateUnavailable(RaylifeError):
    """The candidate and the champion cannot be scored on the same test split."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


@dataclass(frozen=True)
class Comparison:
    model: str
    metric: str
    """The primary test metric that decides, e.g. test_accuracy."""
    candidate: str
    champion: str
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float]
    bar: float
    """The worst candidate value the gate accepts."""
    higher_is_better: bool
    passed: bool
    note: str
    """Where the champion's figures come from (stored, or re-evaluated)."""

    @property
    def summary(self) -> str:
        """One line: the deciding metric, both values and the bar."""
        verdict = "within" if self.passed else "beyond"
        return (
            f"{self.metric} {self.candidate_metrics[self.metric]:.4f} vs champion "
            f"{self.champion_metrics[self.metric]:.4f}: {verdict} the gate (bar {self.bar:.4f})"
        )

    def table(self) -> str:
        """Candidate and champion side by side; the primary metric decides, the others inform."""
        lines = [
            f"{self.model}: candidate {self.candidate} vs champion {self.champion} ({self.note})",
            f"  {'metric':<15} {'candidate':>10} {'champion':>10} {'difference':>11} "
            f"{'threshold':>11}  verdict",
        ]
        for name in sorted(set(self.candidate_metrics) & set(self.champion_metrics)):
            value, reference = self.candidate_metrics[name], self.champion_metrics[name]
            deciding = name == self.metric
            bar = f"{'>=' if self.higher_is_better else '<='} {self.bar:.4f}" if deciding else "-"
            verdict = ("pass" if self.passed else "REFUSE") if deciding else "(info)"
            lines.append(
                f"  {name:<15} {value:>10.4f} {reference:>10.4f} {value - reference:>+11.4f} "
                f"{bar:>11}  {verdict}"
            )
        return "\n".join(lines)


def schema_mismatch(candidate: Artifact, champion: Artifact) -> str | None:
    """Why the candidate cannot replace the champion in place (another input schema), or None.
    Running replicas cannot swap schemas: their HTTP request models come from the first one."""
    new, old = candidate.schema, champion.schema
    if (new.feature_names, new.shape) == (old.feature_names, old.shape):
        return None
    return (
        f"it takes inputs {new.shape} {_names(new.feature_names)}, the champion {old.shape} "
        f"{_names(old.feature_names)}: another model's schema"
    )


def same_split(a: Artifact, b: Artifact) -> bool:
    """Whether two artifacts' test metrics were computed on the same rows. The test rows depend on
    the data (sha256), the split seed and the test fraction only (validation is cut after them)."""
    return _split_key(a) is not None and _split_key(a) == _split_key(b)


def compare(
    candidate_version: str,
    candidate: Artifact,
    champion_version: str,
    champion: Artifact,
    candidate_data: PreparedData | None = None,
) -> Comparison:
    """Score both on the candidate's test split and apply the model's gate. `candidate_data`: the
    candidate's prepared data when the caller has it (a sweep), else it is rebuilt when needed."""
    spec = get_spec(candidate.model)
    task, gate = spec.task_obj, spec.gate
    metric = f"test_{task.metric}"
    data = candidate_data
    if metric not in candidate.metrics:
        data = data or _test_data(candidate, candidate_version, champion_version)
    candidate_metrics = (
        _tests(candidate.metrics)
        if metric in candidate.metrics
        else evaluate_artifact(candidate, data)
    )
    if same_split(candidate, champion) and metric in champion.metrics:
        champion_metrics, note = _tests(champion.metrics), "same test split, stored metrics"
    else:
        data = data or _test_data(candidate, candidate_version, champion_version)
        champion_metrics = evaluate_artifact(champion, data)
        note = "champion re-evaluated on the candidate's test split"
    reference = champion_metrics[metric]
    bar = task.worst_acceptable(reference, gate.absolute, gate.relative)
    return Comparison(
        model=candidate.model,
        metric=metric,
        candidate=candidate_version,
        champion=champion_version,
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics,
        bar=bar,
        higher_is_better=task.higher_is_better,
        passed=task.meets(candidate_metrics[metric], bar),
        note=note,
    )


def _test_data(candidate: Artifact, candidate_version: str, champion_version: str) -> PreparedData:
    try:
        return test_data_for(candidate)
    except RaylifeError as exc:
        raise GateUnavailable(
            f"cannot score {candidate.model} {candidate_version} and champion {champion_version} "
            f"on the same test split: the candidate's data cannot be rebuilt ({exc})",
            f"make that data available again, or promote without the comparison: raylife "
            f"promote {candidate.model} {candidate_version} --force",
        ) from exc


def _names(names: list[str]) -> str:
    return "[" + ", ".join(names[:3]) + (", ...]" if len(names) > 3 else "]")


def _tests(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith("test_")}


def _split_key(artifact: Artifact) -> tuple[object, ...] | None:
    sha256 = artifact.data.get("sha256")
    if not sha256:
        return None
    data_config = artifact.run.get("data_config", {})
    return (sha256, artifact.data.get("split_seed"), data_config.get("test_fraction"))


def accuracy_drop_z(mine: float, n_mine: int, theirs: float, n_theirs: int) -> float:
    """How many standard errors accuracy `mine` (over n_mine answers) lies below `theirs` (each
    proportion smoothed by one success and one failure, so 0/n and n/n still have a spread): the
    canary's live gate and the monitor's live metric share it."""
    p1, p2 = (mine * n_mine + 1) / (n_mine + 2), (theirs * n_theirs + 1) / (n_theirs + 2)
    spread = math.sqrt(p1 * (1 - p1) / n_mine + p2 * (1 - p2) / n_theirs)
    return (theirs - mine) / spread
