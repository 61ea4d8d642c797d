"""`raylife recipe-study` without Ray: the declaration it writes is the one `raylife init` would,
the baselines score raylife's own test rows, and the verdict follows the metric's direction."""

from __future__ import annotations

import argparse
import tomllib

import numpy as np
import pytest

from raylife.catalog import recipe
from raylife.catalog.lookup import get_spec, use_models_dir
from raylife.cli.flags import config_from_args
from raylife.config import DataConfig
from raylife.data.contracts import RawData
from raylife.data.prepare import prepare
from raylife.errors import RaylifeError
from raylife_dev import cli as dev_cli
from raylife_dev import recipe_study
from raylife_dev.cli import RecipeStudyOptions


@pytest.mark.parametrize(
    ("dataset", "task", "shape"),
    [("wine", "multiclass", (178, 13)), ("diabetes", "regression", (442, 10))],
)
def test_the_declaration_is_inits_recipe_for_the_table(tmp_path, dataset, task, shape):
    name = recipe_study.declare(dataset, tmp_path)
    written = tomllib.loads((tmp_path / f"{name}.toml").read_text())
    rows, features = shape
    plan = recipe.for_table(rows, features, task)
    assert written["task"] == task and written["data"] == {"embedded": dataset}
    assert written["hyperparameters"] == plan.hyperparameters
    assert written["search"] == plan.search and written["gate"] == plan.gate
    with use_models_dir(tmp_path):
        spec = get_spec(name)
    assert spec.defaults.hidden_sizes == tuple(plan.hyperparameters["hidden_sizes"])


def test_the_baselines_score_the_runs_test_rows(tmp_path):
    name = recipe_study.declare("breast_cancer", tmp_path)
    with use_models_dir(tmp_path):
        spec = get_spec(name)
        scores = recipe_study.baseline_scores(spec, seed=3)
        test = prepare(spec, DataConfig(seed=3)).test_raw
    assert set(scores) == {"LogisticRegression", "SVC"}
    # an accuracy on n test rows is a multiple of 1/n: the same rows a run is scored on
    n = len(test.y)
    assert all(0.9 < s <= 1.0 and np.isclose(s * n, round(s * n)) for s in scores.values())


def test_the_verdict_follows_the_metrics_direction():
    ci = [0.95, 0.99]
    assert recipe_study.competitive(0.96, ci, "max")  # inside
    assert recipe_study.competitive(1.0, ci, "max")  # better than all of it
    assert not recipe_study.competitive(0.94, ci, "max")
    rmse_ci = [50.0, 60.0]
    assert recipe_study.competitive(59.0, rmse_ci, "min")
    assert recipe_study.competitive(40.0, rmse_ci, "min")
    assert not recipe_study.competitive(61.0, rmse_ci, "min")
    baselines = {"a": {"mean": 0.9}, "b": {"mean": 0.95}}
    assert recipe_study.best_baseline(baselines, "max") == "b"
    assert recipe_study.best_baseline(baselines, "min") == "a"


def test_the_summary_is_a_t_interval_around_the_mean():
    entry = recipe_study.summary([1.0, 2.0, 3.0, 4.0, 5.0])
    low, high = entry["ci95"]
    assert entry["mean"] == 3.0 and low < 3.0 < high
    assert high - 3.0 == pytest.approx(2.776 * np.std([1, 2, 3, 4, 5], ddof=1) / 5**0.5, rel=1e-3)


def test_the_table_names_the_best_baseline_and_the_verdict():
    report = {
        "datasets": {
            "wine": {
                "metric": "accuracy",
                "mode": "max",
                "rows": [178, 13],
                "recipe": {"mean": 0.97, "ci95": [0.95, 0.99]},
                "baselines": {
                    "LogisticRegression": {"mean": 0.98, "ci95": [0.96, 1.0]},
                    "SVC": {"mean": 0.99, "ci95": [0.98, 1.0]},
                },
                "best_baseline": "SVC",
                "competitive": False,
                "gap_to_best": {"mean": -0.02, "ci95": [-0.05, 0.01]},
            }
        }
    }
    row = recipe_study.format_table(report).splitlines()[-1]
    assert "SVC 0.9900 [0.9800, 1.0000]" in row and "LogisticRegression 0.9800" in row
    assert "-0.0200 [-0.0500, +0.0100]" in row and row.endswith("NOT competitive |")


def test_unknown_or_image_datasets_are_refused_with_the_choices(tmp_path, monkeypatch):
    with pytest.raises(RaylifeError, match="embedded tables: .*wine"):
        recipe_study.dataset_list("wine,winee")
    images = RawData(np.zeros((4, 1, 2, 2)), np.arange(4), ["pixels"], None, "image", "test")
    monkeypatch.setitem(recipe_study.EMBEDDED, "pictures", lambda: images)
    with pytest.raises(RaylifeError, match="images"):
        recipe_study.declare("pictures", tmp_path)


def test_the_verb_parses_to_its_options():
    parser = argparse.ArgumentParser()
    verbs = parser.add_subparsers(dest="verb")
    dev_cli.register(verbs)
    study = verbs.choices["recipe-study"]
    assert config_from_args(RecipeStudyOptions, study.parse_args([])) == RecipeStudyOptions()
    options = config_from_args(
        RecipeStudyOptions, study.parse_args(["--datasets", "wine", "--samples", "2"])
    )
    assert (options.datasets, options.samples) == ("wine", 2)
    with pytest.raises(RaylifeError, match="--samples"):
        RecipeStudyOptions(samples=0)
