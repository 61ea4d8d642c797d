"""Drift tests against a profile: false alarms bounded by alpha, real shifts found."""

from __future__ import annotations

import numpy as np
import pytest

from raylife.data.profile import Distribution
from raylife.monitoring import drift

RNG = np.random.default_rng(7)
NORMAL = Distribution.of_values(RNG.normal(size=2000))


def test_unshifted_windows_rarely_alarm_however_many_features():
    # 200 windows x 30 features, all from the reference's population: Bonferroni holds the
    # window's false-alarm rate at alpha (1%), not 30 x 1%
    rng = np.random.default_rng(1)
    features = {f"f{i}": NORMAL for i in range(30)}
    alarms = sum(
        any(
            f.drifted
            for f in drift.compare(features, rng.normal(size=(500, 30)), None, drift.Thresholds())
        )
        for _ in range(200)
    )
    assert alarms / 200 <= 0.03


def test_a_third_of_a_standard_deviation_is_found_in_500_rows():
    live = np.random.default_rng(2).normal(0.33, 1.0, size=(500, 1))
    [finding] = drift.compare({"x": NORMAL}, live, None, drift.Thresholds())
    assert finding.drifted and finding.p_value < 1e-6 and finding.psi >= 0.1


def test_a_significant_but_tiny_shift_is_not_drift():
    # 50,000 rows make a 0.05 sd shift significant; its PSI says it does not matter
    live = np.random.default_rng(3).normal(0.05, 1.0, size=(50_000, 1))
    [finding] = drift.compare({"x": NORMAL}, live, None, drift.Thresholds())
    assert finding.p_value < 0.01 / 1 and not finding.drifted


def test_a_discrete_feature_keeps_its_steps():
    binary = Distribution.of_values((RNG.random(2000) < 0.3).astype(float))
    same = (np.random.default_rng(4).random((500, 1)) < 0.3).astype(float)
    moved = (np.random.default_rng(5).random((500, 1)) < 0.6).astype(float)
    assert not drift.compare({"b": binary}, same, None, drift.Thresholds())[0].drifted
    assert drift.compare({"b": binary}, moved, None, drift.Thresholds())[0].drifted
    # the reference CDF steps at 0 and at 1 (between them only the last percentile's 1% ramps)
    cdf = drift.reference_cdf(binary, np.array([-0.5, 0.0, 0.5, 1.0]))
    assert cdf[0] == 0 and 0.6 < cdf[1] < 0.8 and cdf[2] - cdf[1] <= 0.01 and cdf[3] == 1
    assert drift.reference_cdf(binary, np.array([0.0]), left=True)[0] == 0


@pytest.mark.parametrize(("mix", "drifted"), [((0.5, 0.3, 0.2), False), ((0.2, 0.3, 0.5), True)])
def test_predicted_classes(mix, drifted):
    reference = Distribution.of_classes(
        list(RNG.choice(["a", "b", "c"], 2000, p=[0.5, 0.3, 0.2])), ["a", "b", "c"]
    )
    live = np.random.default_rng(6).choice(["a", "b", "c"], 500, p=mix)
    [finding] = drift.compare({}, np.zeros((500, 0)), (reference, live), drift.Thresholds())
    assert finding.test == "chi2" and finding.drifted is drifted


def test_a_class_the_reference_never_saw_counts():
    reference = Distribution.of_classes(["a"] * 50 + ["b"] * 50, ["a", "b"])
    [finding] = drift.compare({}, np.zeros((300, 0)), (reference, ["c"] * 300), drift.Thresholds())
    assert finding.drifted and np.isfinite(finding.psi)
