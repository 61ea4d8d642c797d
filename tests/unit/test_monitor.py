"""`raylife monitor`: real captures (the replicas' writer) of a stored version, judged by window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from raylife.lifecycle.captures import CAPTURE_DIR
from raylife.lifecycle.store import ModelStore
from raylife.monitoring.monitor import EXIT_DRIFT
from raylife.serve.capture import CaptureWriter
from tests.conftest import prepared, quick_artifact
from tests.support.traffic import capture, labelled, monitor, traffic


def test_shifted_traffic_drifts_and_the_cursor_moves_past_judged_windows(served, capsys):
    store, version, predictor = served
    before = (store.pointer("iris"), (Path(store.uri) / "iris" / "HISTORY.jsonl").exists())
    capture(store, version, predictor, traffic(200), "same")
    capture(store, version, predictor, traffic(230, shift=1.5, seed=1), "moved")
    assert monitor("--window-requests", "100") == EXIT_DRIFT
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " window " in line]
    assert len(lines) == 4  # 430 requests: four windows of 100, 30 wait for the next run
    assert "no drift" in lines[0] and "no drift" in lines[1]
    assert "drift: PSI" in lines[2] and "sepal_length_cm" in lines[2]
    reports = sorted((Path(store.uri) / "iris" / "monitor" / "reports" / version).glob("*.json"))
    assert len(reports) == 4 and len(list(reports[0].parent.glob("*.png"))) == 2
    last = json.loads(reports[-1].read_text())
    assert last["drifted"][0] == "sepal_length_cm" and last["reason"].startswith("drift: PSI")
    # the rest waits: a partial window is not judged, and nothing is promoted or rolled back
    assert monitor("--window-requests", "100") == 2
    assert "30 request(s) captured since" in capsys.readouterr().err
    assert (store.pointer("iris"), (Path(store.uri) / "iris" / "HISTORY.jsonl").exists()) == before


def test_unshifted_traffic_passes(served, capsys):
    store, version, predictor = served
    capture(store, version, predictor, traffic(300, seed=3), "same")
    assert monitor("--window-requests", "100") == 0
    assert capsys.readouterr().out.count("no drift") == 3


def test_another_versions_rows_are_not_this_versions_traffic(served, capsys):
    store, _version, predictor = served
    capture(store, "20200101-000000-000000", predictor, traffic(150), "canary")
    assert monitor("--window-requests", "100") == 2
    assert "0 request(s) captured so far" in capsys.readouterr().err


def test_no_captures_says_how_to_get_them(served, capsys):
    assert monitor() == 2
    assert "no captures of iris" in capsys.readouterr().err


def test_a_window_below_the_tests_minimum_is_refused(served, capsys):
    store, version, predictor = served
    capture(store, version, predictor, traffic(30), "few")
    assert monitor("--window-requests", "30") == 2
    assert "below the 100 rows the tests need" in capsys.readouterr().err


def test_a_corrupt_capture_file_is_named(served, capsys):
    store, version, predictor = served
    capture(store, version, predictor, traffic(100), "same")
    [part] = (Path(store.uri) / "iris" / CAPTURE_DIR).rglob("*.parquet")
    part.write_bytes(part.read_bytes()[:50])
    assert monitor() == 2
    err = capsys.readouterr().err
    assert part.name in err and "not a readable capture file" in err and "move it out" in err


def test_rows_that_do_not_fit_the_version_are_named(served, capsys):
    store, version, _predictor = served
    writer = CaptureWriter(store.uri, "iris", fraction=1.0, flush_s=0.05)
    wide = np.ones((1, 7))
    writer.record("wide", wide, version, [{"label": "setosa"}], 1.0, "predict")
    writer.close()
    assert monitor() == 2
    err = capsys.readouterr().err
    assert "carry 7..7 input values, but" in err and "takes 4" in err and ".parquet" in err


def test_a_version_without_a_profile_names_the_fix(home, capsys):
    store = ModelStore(str(home / "store"))
    artifact = quick_artifact("iris", epochs=0)
    artifact.profile = {}
    store.promote("iris", store.register(artifact))
    assert monitor() == 2
    assert "has no reference profile" in capsys.readouterr().err


def test_a_window_of_no_requests_is_refused(served, capsys):
    assert monitor("--window-requests", "0") == 2
    assert "--window-requests 0: give a positive number" in capsys.readouterr().err


@pytest.mark.parametrize("every", ["0s", "fast", "5 weeks"])
def test_a_bad_period_is_refused(served, every, capsys):
    assert monitor("--every", every) == 2
    assert "--every" in capsys.readouterr().err


def test_feedback_gives_the_live_metric_and_a_changed_world_is_caught(served, capsys):
    # Same inputs, so no feature moves; but in the second half the truth changed (every answer is
    # now wrong): only the live accuracy, from feedback, can see it.
    store, version, predictor = served
    rows, truths = labelled(200, seed=5)
    capture(store, version, predictor, rows, "same", truths)
    answers = [a["label"] for a in predictor.predict_array(rows)]
    names = prepared("iris").label_names or []
    wrong = [next(n for n in names if n != a) for a in answers]
    capture(store, version, predictor, rows, "changed", wrong)
    assert monitor("--window-requests", "100") == EXIT_DRIFT
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " window " in line]
    assert "no drift" in lines[0] and "no drift" in lines[1], out
    assert "drift: live accuracy 0 vs test" in lines[2], out
    folder = Path(store.uri) / "iris" / "monitor" / "reports" / version
    report = json.loads(sorted(folder.glob("*.json"))[0].read_text())
    [metric] = [f for f in report["findings"] if f["name"] == "live accuracy"]
    same = [a == t for a, t in zip(answers[:100], truths[:100], strict=True)]
    assert metric["value"] == pytest.approx(np.mean(same)) and not metric["drifted"]
