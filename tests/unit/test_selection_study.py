"""The epoch-selection study never touches a row that `make quality` scores, and measures both
selections from the same fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raylife.catalog.lookup import get_spec
from raylife.config import DataConfig
from raylife.data.prepare import prepare
from raylife.data.sources import load_raw
from raylife_dev.selection_study import development_rows, pooled, study_model


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


def test_study_scores_every_ending_on_every_development_row():
    spec = get_spec("iris")
    entry = study_model("iris", [0, 1], folds=3, repeats=2, processes=1, hparams=spec.debug)
    assert entry["rows_scored"] == 2 * entry["development_rows"]
    endings = entry["endings"]
    assert set(endings) == {"constant/best", "constant/last", "cosine/best", "cosine/last"}
    assert all(0.0 <= value <= 1.0 for value in endings.values())
    chosen = entry["recommended"]
    assert f"{chosen['lr_schedule']}/{chosen['epoch_selection']}" in endings
    assert entry["gain_over_baseline"] >= 0.0  # the baseline is one of the candidates
    assert entry["excluded_test_seeds"] == [0, 1]
    assert entry["hparams"]["epochs"] == spec.debug.epochs


def test_the_choice_follows_the_metric_direction_and_pools_by_rows():
    from raylife.tasks import TASKS
    from raylife_dev.selection_study import BASELINE, choose_ending

    # Two folds: 10 rows and 90 rows. By mean of folds "cosine/last" looks best; by row it is not.
    folds = {
        BASELINE: [(10, 3.0), (90, 3.0)],
        ("cosine", "last"): [(10, 1.0), (90, 3.5)],
        ("cosine", "best"): [(10, 3.4), (90, 2.5)],
    }
    results, chosen, gains = choose_ending(TASKS["regression"], folds)
    assert chosen == ("cosine", "best")  # lowest pooled RMSE
    assert results[chosen] < results[BASELINE] < results[("cosine", "last")]
    assert gains == pytest.approx([3.0 - 3.4, 3.0 - 2.5])  # positive = better than baseline
    accuracy = {ending: [(n, 1 - v / 4) for n, v in scores] for ending, scores in folds.items()}
    _, chosen, _ = choose_ending(TASKS["multiclass"], accuracy)
    assert chosen == ("cosine", "best")  # highest pooled accuracy


def test_pooled_rmse_weights_folds_by_rows():
    assert pooled("accuracy", [(1, 1.0), (3, 0.0)]) == 0.25
    assert pooled("rmse", [(1, 2.0), (3, 0.0)]) == pytest.approx(math.sqrt(4 / 4))


def test_registry_defaults_follow_the_committed_study():
    import json
    from pathlib import Path

    from raylife.catalog.lookup import catalogue

    report = json.loads((Path(__file__).parents[2] / "reports/selection_study.json").read_text())
    for name, spec in catalogue().items():
        assert name in report, f"{name}: run `raylife selection-study --models {name}`"
        chosen = report[name]["recommended"]
        assert spec.defaults.lr_schedule == chosen["lr_schedule"], name
        assert spec.defaults.epoch_selection == chosen["epoch_selection"], name
        # The study measured these very defaults, apart from the two choices it makes.
        measured = {k: v for k, v in report[name]["hparams"].items() if k not in chosen}
        assert measured == {k: v for k, v in spec.defaults.to_dict().items() if k not in chosen}
