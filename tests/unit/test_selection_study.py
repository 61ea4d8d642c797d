"""The epoch-selection study never touches a row that `make quality` scores, and measures both
selections from the same fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raylife.config import DataConfig
from raylife.data import load_raw, prepare
from raylife.registry import get_spec
from raylife.selection_study import development_rows, pooled, study_model


@pytest.mark.parametrize("model", ["ionosphere", "boston"])  # stratified, and not
def test_development_rows_exclude_every_quality_test_row(model):
    spec = get_spec(model)
    raw = load_raw(spec, DataConfig())
    seeds = [0, 1, 2]
    dev = set(development_rows(raw, DataConfig(), seeds, stratify=spec.task != "regression"))
    tested: set[int] = set()
    for seed in seeds:
        # Independently of the study's own index bookkeeping: find the test rows that a real run
        # with this seed scores, by content (rows that occur once in the dataset).
        test = prepare(spec, DataConfig(seed=seed)).test_raw
        for row in test.X:
            matches = np.flatnonzero((row == raw.X).all(axis=1))
            if len(matches) == 1:
                tested.add(int(matches[0]))
    assert tested and not dev & tested
    assert len(dev) >= len(raw.y) * 0.85**3 * 0.9  # only the union of the test splits is gone


def test_study_scores_both_selections_on_every_development_row():
    spec = get_spec("iris")
    entry = study_model("iris", [0, 1], folds=3, repeats=2, processes=1, hparams=spec.debug)
    assert entry["rows_scored"] == 2 * entry["development_rows"]
    assert 0.0 <= entry["best"] <= 1.0 and 0.0 <= entry["last"] <= 1.0
    assert entry["recommended"] == ("last" if entry["last_gain"] >= 0 else "best")
    assert (
        entry["excluded_test_seeds"] == [0, 1] and entry["hparams"]["epochs"] == spec.debug.epochs
    )


def test_pooled_rmse_weights_folds_by_rows():
    assert pooled("accuracy", [(1, 1.0), (3, 0.0)]) == 0.25
    assert pooled("rmse", [(1, 2.0), (3, 0.0)]) == pytest.approx(math.sqrt(4 / 4))


def test_registry_defaults_follow_the_committed_study():
    import json
    from pathlib import Path

    from raylife.registry import MODEL_SPECS

    report = json.loads((Path(__file__).parents[2] / "reports/selection_study.json").read_text())
    for name, spec in MODEL_SPECS.items():
        assert name in report, f"{name}: run `raylife selection-study --models {name}`"
        assert spec.defaults.epoch_selection == report[name]["recommended"], name
        # The study measured these very defaults (apart from the choice it measures).
        assert {**report[name]["hparams"], "epoch_selection": None} == {
            **spec.defaults.to_dict(),
            "epoch_selection": None,
        }, name
