"""Drift tests: one window of live traffic against a version's reference profile.

Each monitored value (a table's feature; an image's pixel mean and std) and the version's answers
get two figures:
- a two-sample test: Kolmogorov-Smirnov for numbers (the live values' empirical CDF against the
  reference's, read from its 101 percentiles, with the reference's sample size as its n), or a
  chi-square test of the two count tables for classes (a classifier's answers);
- the population stability index (PSI) over the reference's deciles, or over the classes.

A value has drifted when its p-value is below alpha / tests (Bonferroni: the window's false-alarm
rate stays below alpha however many features the model has) AND its PSI reaches the threshold (a
large window makes a tiny shift significant; the PSI says whether it is big enough to matter).
Nothing here reads files or decides anything beyond the verdict; raylife.monitoring.monitor does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from raylife.data.profile import Distribution

if TYPE_CHECKING:
    from raylife.catalog.declaration import MonitorDecl

DECILES = slice(10, 100, 10)
"""The reference's interior deciles: the PSI's bin edges."""


@dataclass(frozen=True)
class Thresholds:
    alpha: float = 0.01
    """False-alarm rate of one window, over all its tests together."""
    psi: float = 0.1
    """Smallest PSI that counts as drift (0.1: the usual "moderate shift")."""
    min_rows: int = 100
    """Fewer live rows than this: the window is not tested."""

    @classmethod
    def declared(cls, monitor: MonitorDecl) -> Thresholds:
        """A model's thresholds, from its declaration's [monitor] table."""
        return cls(monitor.alpha, monitor.psi, monitor.min_rows)


@dataclass(frozen=True)
class Finding:
    name: str
    """A feature, an image value, or "predictions"."""
    test: str
    """"ks" or "chi2"."""
    statistic: float
    p_value: float
    psi: float
    drifted: bool
    value: float | None = None
    """A live metric's value (the metric findings only)."""
    reference: float | None = None
    """What it is held against: the version's test metric."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def reason(self) -> str:
        if self.value is not None and self.reference is not None:
            return f"{self.name} {self.value:.4g} vs test {self.reference:.4g}"
        return f"PSI {self.psi:.2f} on {self.name}"

    def line(self) -> str:
        if self.value is not None:
            figures = f"{self.test} {self.statistic:.2f} (p {self.p_value:.2g})"
            return f"{self.reason()}: {figures}{'  WORSE' if self.drifted else ''}"
        return (
            f"{self.name}: PSI {self.psi:.3f}, {self.test} {self.statistic:.3f} "
            f"(p {self.p_value:.2g}){'  DRIFT' if self.drifted else ''}"
        )


def compare(
    features: dict[str, Distribution],
    live: np.ndarray,
    predictions: tuple[Distribution, Any] | None,
    thresholds: Thresholds,
) -> list[Finding]:
    """Findings for every column of `live` (rows x values, in `features`' order) and, when given,
    for the predictions: (their reference, live labels as strings or values as floats)."""
    tests = len(features) + (1 if predictions else 0)
    bar = thresholds.alpha / max(tests, 1)
    findings = [
        _values_finding(name, reference, live[:, i], bar, thresholds.psi)
        for i, (name, reference) in enumerate(features.items())
    ]
    if predictions:
        reference, answers = predictions
        if reference.kind == "classes":
            findings.append(
                _classes_finding("predictions", reference, answers, bar, thresholds.psi)
            )
        else:
            values = np.asarray(answers, dtype=np.float64)
            findings.append(_values_finding("predictions", reference, values, bar, thresholds.psi))
    return findings


def _values_finding(
    name: str, reference: Distribution, values: np.ndarray, bar: float, psi_bar: float
) -> Finding:
    statistic, p_value = ks_test(reference, values)
    index = values_psi(reference, values)
    return Finding(name, "ks", statistic, p_value, index, p_value < bar and index >= psi_bar)


def _classes_finding(
    name: str, reference: Distribution, labels: Any, bar: float, psi_bar: float
) -> Finding:
    statistic, p_value = chi2_test(reference, labels)
    index = classes_psi(reference, labels)
    return Finding(name, "chi2", statistic, p_value, index, p_value < bar and index >= psi_bar)


MIN_FEEDBACK = 30
"""Truths a window needs before its live metric is tested (as the canary's live gate)."""


def live_metric(
    classification: bool,
    correct_or_squared: np.ndarray,
    test_value: float,
    test_rows: int,
    worst_acceptable: float,
    alpha: float,
) -> Finding | None:
    """The window's live accuracy or RMSE, from the truths sent back for its answers, against the
    version's test metric: worse when it is past the promotion gate's tolerance (worst_acceptable)
    AND significantly worse (one-sided, at alpha). None below MIN_FEEDBACK truths.
    classification: per answer 1/0 correct; regression: per answer squared error."""
    from scipy.stats import norm  # lazy: scipy is heavy and only the monitor needs it

    from raylife.lifecycle.gate import accuracy_drop_z  # lazy: the gate imports torch

    values = np.asarray(correct_or_squared, dtype=np.float64)
    n = len(values)
    if n < MIN_FEEDBACK:
        return None
    if classification:
        live = float(values.mean())
        z = accuracy_drop_z(live, n, test_value, max(test_rows, 1))
        worse = live < worst_acceptable
        name = "live accuracy"
    else:
        live = float(np.sqrt(values.mean()))
        spread = float(values.std(ddof=1)) / np.sqrt(n) if n > 1 else 0.0
        z = (float(values.mean()) - test_value**2) / spread if spread > 0 else 0.0
        worse = live > worst_acceptable
        name = "live rmse"
    p_value = float(norm.sf(z))
    return Finding(name, "z", z, p_value, 0.0, worse and p_value < alpha, live, test_value)


# --------------------------------------------------------------------------------------------------
# Numbers


def reference_cdf(reference: Distribution, x: np.ndarray, left: bool = False) -> np.ndarray:
    """The reference's CDF at x, P(X <= x) (left: P(X < x)), linear between its percentiles.
    Tied percentiles are a point mass, so a discrete feature keeps its steps."""
    p = np.asarray(reference.percentiles, dtype=np.float64)
    q = np.linspace(0.0, 1.0, len(p))
    x = np.asarray(x, dtype=np.float64)
    i = np.searchsorted(p, x, side="left" if left else "right")
    out = np.where(i == 0, 0.0, 1.0)
    inside = (i > 0) & (i < len(p))
    j = i[inside]
    lo, hi = p[j - 1], p[j]  # lo <= x < hi (right) or lo < x <= hi (left): hi > lo either way
    out[inside] = q[j - 1] + (q[j] - q[j - 1]) * (x[inside] - lo) / (hi - lo)
    return out


def ks_test(reference: Distribution, values: np.ndarray) -> tuple[float, float]:
    """(D, p): the largest gap between the live and reference CDFs, and its two-sample p-value
    (n = live rows, m = the reference's sample rows; Kolmogorov's distribution at n*m/(n+m))."""
    from scipy.stats import kstwo  # lazy: scipy is heavy and only the monitor needs it

    live = np.sort(np.asarray(values, dtype=np.float64))
    n, m = len(live), reference.count
    if n == 0 or m == 0:
        return 0.0, 1.0
    points = np.union1d(live, reference.percentiles)
    right = np.searchsorted(live, points, side="right") / n
    left = np.searchsorted(live, points, side="left") / n
    gap = max(
        float(np.abs(right - reference_cdf(reference, points)).max()),
        float(np.abs(left - reference_cdf(reference, points, left=True)).max()),
    )
    effective = max(1, round(n * m / (n + m)))
    return gap, float(kstwo.sf(gap, effective))


def values_psi(reference: Distribution, values: np.ndarray) -> float:
    """PSI over the bins the reference's deciles cut (a discrete feature: fewer, wider bins)."""
    edges = np.unique(np.asarray(reference.percentiles, dtype=np.float64)[DECILES])
    cumulative = np.concatenate([[0.0], reference_cdf(reference, edges), [1.0]])
    expected = np.diff(cumulative)
    bins = np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="left")
    observed = np.bincount(bins, minlength=len(edges) + 1)
    return _psi(expected, observed, reference.count)


# --------------------------------------------------------------------------------------------------
# Classes


def chi2_test(reference: Distribution, labels: Any) -> tuple[float, float]:
    """(statistic, p): chi-square test that live labels and the reference come from one mix."""
    from scipy.stats import chi2_contingency  # lazy: scipy is heavy and only the monitor needs it

    expected, observed = _class_counts(reference, labels)
    table = np.vstack([observed, expected * reference.count])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or observed.sum() == 0:
        return 0.0, 1.0
    result = chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def classes_psi(reference: Distribution, labels: Any) -> float:
    expected, observed = _class_counts(reference, labels)
    return _psi(expected, observed, reference.count)


def _class_counts(reference: Distribution, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(reference fractions, live counts) per class; a live class the reference never saw
    gets a column of its own (fraction 0)."""
    live = [str(label) for label in labels]
    names = list(reference.fractions) + sorted(set(live) - set(reference.fractions))
    expected = np.array([reference.fractions.get(name, 0.0) for name in names])
    index = {name: i for i, name in enumerate(names)}
    observed = np.bincount([index[label] for label in live], minlength=len(names))
    return expected, observed.astype(np.float64)


def _psi(expected: np.ndarray, observed: np.ndarray, reference_rows: int) -> float:
    """sum((a - e) * ln(a / e)); empty bins get half a row on either side, so a bin that one side
    never saw counts as much as half a row's worth, not infinity."""
    n = max(float(observed.sum()), 1.0)
    m = max(float(reference_rows), 1.0)
    actual = np.maximum(observed / n, 0.5 / n)
    reference = np.maximum(expected, 0.5 / m)
    actual, reference = actual / actual.sum(), reference / reference.sum()
    return float(((actual - reference) * np.log(actual / reference)).sum())
