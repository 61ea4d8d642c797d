"""`raylife recipe-study` end to end at small size: one table, one seed, a 2-trial sweep of the
debug preset on the session's cluster, the baselines on the same split, a verdict."""

from __future__ import annotations

import json

from raylife.config import TuneConfig
from raylife.settings import Settings
from raylife_dev import recipe_study


def test_one_table_one_seed_two_trials(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYLIFE_HOME", str(tmp_path))
    monkeypatch.delenv("RAYLIFE_MODELS", raising=False)
    settings = Settings.from_env(tracking=False)
    report = recipe_study.run(
        ["wine"], [0], settings, TuneConfig(num_samples=2), preset="debug", say=lambda _: None
    )
    entry = report["datasets"]["wine"]
    assert entry["task"] == "multiclass" and entry["rows"] == [178, 13]
    assert len(entry["recipe"]["runs"]) == 1 and 0.0 <= entry["recipe"]["mean"] <= 1.0
    assert 0.0 <= entry["recipe"]["runs"][0]["val"] <= 1.0  # the score the sweep chose by
    assert set(entry["baselines"]) == {"LogisticRegression", "SVC"}
    assert entry["competitive"] == recipe_study.competitive(
        entry["recipe"]["mean"], entry["baselines"][entry["best_baseline"]]["ci95"], "max"
    )
    gap = entry["gap_to_best"]["values"][0]
    assert gap == entry["recipe"]["mean"] - entry["baselines"][entry["best_baseline"]]["mean"]
    assert report["budget"] == {"num_samples": 2, "scheduler": "asha", "preset": "debug"}
    path = recipe_study.write_report(report, tmp_path / "recipe_study.json")
    assert json.loads(path.read_text())["datasets"]["wine"]["seeds"] == [0]
    assert "| wine (178 x 13) |" in recipe_study.format_table(report)
