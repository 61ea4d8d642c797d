"""`raylife retrain`'s core without Ray: why, the table, the verdict, the refusal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raylife.catalog.lookup import get_spec
from raylife.errors import RaylifeError
from raylife.lifecycle import history
from raylife.monitoring import retrain
from tests.support.traffic import capture, labelled, monitor


def test_the_table_adds_labelled_captures_and_keeps_a_recent_holdout(served):
    store, version, predictor = served
    rows, truths = labelled(150, seed=2)
    capture(store, version, predictor, rows, "fb", truths)
    capture(store, version, predictor, rows[:20], "unlabelled")  # no feedback: not in the table
    champion = store.load("iris", version)[1]
    table = retrain.build_table(store, get_spec("iris"), champion)
    frame = pd.read_parquet(table.uri)
    assert len(table.recent_y) == 45 and table.captured == 105  # 30% of 150 kept out
    base = champion.data["rows"]["train"] + champion.data["rows"]["val"]
    assert table.rows == len(frame) == base + 105  # the champion's test split stays out
    assert list(frame.columns) == [*champion.schema.feature_names, table.target]
    assert set(frame[table.target]) <= set(champion.label_names or [])
    # the holdout rows are not in the table
    recent = {tuple(r) for r in np.round(table.recent_X, 6)}
    kept = {tuple(r) for r in np.round(frame[champion.schema.feature_names].to_numpy()[base:], 6)}
    assert len(recent) > 0 and all(len(r) == 4 for r in recent) and kept


def test_too_few_labelled_rows_names_the_fix(served):
    store, version, predictor = served
    rows, truths = labelled(40, seed=3)
    capture(store, version, predictor, rows, "fb", truths)
    with pytest.raises(RaylifeError, match="40 captured rows have feedback; retraining needs 100"):
        retrain.build_table(store, get_spec("iris"), store.load("iris", version)[1])


def test_a_candidate_no_better_than_the_champion_is_refused_and_nothing_moves(served):
    store, version, predictor = served
    rows, truths = labelled(150, seed=4)
    capture(store, version, predictor, rows, "fb", truths)
    champion = store.load("iris", version)[1]
    table = retrain.build_table(store, get_spec("iris"), champion)
    verdict = retrain.judge(get_spec("iris"), champion, champion, table)  # itself: gains are 0
    assert not verdict.better and "not significantly better" in verdict.line
    assert verdict.figures["recent_gain_z"] == 0.0
    retrain.record_refusal(
        store, "iris", version, "20990101-000000-000000", verdict.line, verdict.figures
    )
    [entry] = history.read(store, "iris")
    assert entry.action == "refuse" and entry.source_run == {"source": "retrain"}
    assert store.pointer("iris").version == version


def test_when_drifted_reads_the_latest_report(served, capsys):
    store, version, predictor = served
    with pytest.raises(RaylifeError, match="no monitor report"):
        retrain.drift_reason(store, "iris", version)
    capture(store, version, predictor, labelled(100, seed=5)[0], "same")
    monitor("--window-requests", "100")
    assert retrain.drift_reason(store, "iris", version) == ""
    capture(store, version, predictor, labelled(100, seed=6)[0] + [1.5, 0, 0, 0], "moved")
    monitor("--window-requests", "100")
    assert retrain.drift_reason(store, "iris", version).startswith("drift: PSI")


def test_an_image_model_is_refused_in_one_line(served):
    store, version, _ = served
    with pytest.raises(RaylifeError, match="retrain takes table models; mnist takes images"):
        retrain.build_table(store, get_spec("mnist"), store.load("iris", version)[1])


@pytest.mark.parametrize(
    ("flags", "problem"),
    [(["--samples", "0"], "--samples must be at least 1"), (["--canary", "10,50"], "not 100")],
)
def test_retrain_refuses_bad_flags_before_any_work(served, flags, problem, capsys):
    from raylife.cli import main

    assert main(["retrain", "iris", "--no-tracking", *flags]) == 2
    assert problem in capsys.readouterr().err
