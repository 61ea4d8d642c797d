"""The promotion gate, the history and rollback, on a local store (no Ray). Most versions carry
stored test metrics on the same split, so the gate compares them without evaluating anything."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from raylife.cli import main
from raylife.errors import RaylifeError
from raylife.lifecycle import history
from raylife.lifecycle.evaluate import evaluate_artifact
from raylife.lifecycle.promotion import promote, rollback
from raylife.lifecycle.store import ModelStore
from raylife.lifecycle.train_and_store import register_checkpoint
from raylife.tasks import TASKS

from ..conftest import prepared, quick_artifact


@pytest.fixture(scope="module")
def iris():
    return quick_artifact("iris", epochs=0)


@pytest.fixture
def store(tmp_path):
    return ModelStore(str(tmp_path / "store"))


def scored(artifact, **metrics):
    """A copy of `artifact` whose stored metrics are `metrics` (test_accuracy=0.9 ...)."""
    return replace(artifact, metrics=dict(metrics))


def add(store, artifact, **metrics):
    return store.register(scored(artifact, **metrics))


def test_the_bar_follows_the_metric_direction():
    accuracy, rmse = TASKS["multiclass"], TASKS["regression"]
    assert accuracy.worst_acceptable(0.9, 0.05, 0.0) == pytest.approx(0.85)
    assert rmse.worst_acceptable(4.0, 0.0, 0.05) == pytest.approx(4.2)
    assert rmse.worst_acceptable(4.0, 0.1, 0.05) == pytest.approx(4.3)


def test_first_promotion_passes_and_is_recorded(store, iris):
    version = add(store, iris, test_accuracy=0.5)
    outcome = promote(store, "iris", version, note="first")
    assert outcome.action == "promote" and outcome.pointer.generation == 1
    (entry,) = history.read(store, "iris")
    assert (entry.action, entry.from_version, entry.to_version) == ("promote", None, version)
    assert entry.reason.startswith("first; first promotion") and entry.user and entry.host
    assert entry.to_metrics == {"test_accuracy": 0.5} and entry.at.endswith("+00:00")


def test_worse_beyond_the_threshold_is_refused_and_the_pointer_stays(store, iris):
    champion = add(store, iris, test_accuracy=0.90)
    promote(store, "iris", champion)
    within = add(store, iris, test_accuracy=0.86)  # iris allows 0.045: bar 0.855
    beyond = add(store, iris, test_accuracy=0.85)

    refused = promote(store, "iris", beyond)
    assert refused.action == "refuse" and refused.pointer is None
    assert store.pointer("iris").version == champion
    assert f"the pointer stays at {champion}" in refused.reason and "--force" in refused.reason
    table = refused.comparison.table()
    assert "test_accuracy" in table and "-0.0500" in table and ">= 0.8550" in table
    assert "REFUSE" in table

    passed = promote(store, "iris", within)
    assert passed.action == "promote" and store.pointer("iris").version == within
    actions = [(e.action, e.from_version, e.to_version) for e in history.read(store, "iris")]
    assert actions[1:] == [("refuse", champion, beyond), ("promote", champion, within)]
    refusal = history.read(store, "iris")[1]
    assert refusal.from_metrics == {"test_accuracy": 0.90}
    assert refusal.to_metrics == {"test_accuracy": 0.85}
    assert refusal.generation is None and not refusal.forced


def test_regression_gate_is_relative_and_lower_is_better(store):
    boston = quick_artifact("boston", epochs=0)
    champion = add(store, boston, test_rmse=4.0)
    promote(store, "boston", champion)  # boston allows 5 %: bar 4.2
    assert promote(store, "boston", add(store, boston, test_rmse=4.3)).action == "refuse"
    assert promote(store, "boston", add(store, boston, test_rmse=4.15)).action == "promote"


def test_force_promotes_a_worse_candidate_and_says_so(store, iris):
    promote(store, "iris", add(store, iris, test_accuracy=0.9))
    worse = add(store, iris, test_accuracy=0.5)
    outcome = promote(store, "iris", worse, force=True)
    assert outcome.action == "promote" and outcome.forced
    assert "forced past the gate" in outcome.line
    last = history.read(store, "iris")[-1]
    assert last.forced and last.reason.startswith("forced past the gate: iris")


def test_another_split_re_evaluates_the_champion_on_the_candidates_rows(store, iris):
    # The champion's stored 0.99 was scored on other rows (split seed 1): it must not count.
    other_split = replace(iris, data={**iris.data, "split_seed": 1})
    champion = add(store, other_split, test_accuracy=0.99)
    promote(store, "iris", champion)
    candidate = add(store, iris, test_accuracy=0.5)
    outcome = promote(store, "iris", candidate)
    assert outcome.action == "promote"
    assert "re-evaluated on the candidate's test split" in outcome.comparison.note
    expected = evaluate_artifact(iris, prepared("iris"))["test_accuracy"]
    assert outcome.comparison.champion_metrics["test_accuracy"] == pytest.approx(expected)


def test_unavailable_data_refuses_unless_forced(store, iris):
    promote(store, "iris", add(store, iris, test_accuracy=0.9))
    gone = replace(
        iris,
        data={**iris.data, "sha256": "feed" * 16},
        run={**iris.run, "data_config": {"source": "/no/such/table.csv", "target": "y"}},
    )
    candidate = add(store, gone, test_accuracy=0.95)
    refused = promote(store, "iris", candidate)
    assert refused.action == "refuse" and "cannot score iris" in refused.reason
    assert f"raylife promote iris {candidate} --force" in refused.reason
    assert promote(store, "iris", candidate, force=True).forced
    assert store.pointer("iris").version == candidate


def test_rollback_walks_back_through_the_champions(store, iris):
    a, b, c = (add(store, iris, test_accuracy=v) for v in (0.5, 0.6, 0.7))
    for version in (a, b, c):
        promote(store, "iris", version)
    first = rollback(store, "iris", note="bad answers")
    assert (first.champion, first.version, first.pointer.generation) == (c, b, 4)
    assert rollback(store, "iris").version == a
    with pytest.raises(RaylifeError, match="iris has no previous champion in .*HISTORY.jsonl"):
        rollback(store, "iris")
    assert store.pointer("iris").version == a
    entries = history.read(store, "iris")
    assert [e.action for e in entries] == ["promote"] * 3 + ["rollback"] * 2
    assert entries[3].reason == "bad answers; rollback"
    assert entries[3].from_metrics == {"test_accuracy": 0.7}
    assert entries[3].to_metrics == {"test_accuracy": 0.6}


def test_rollback_reaches_a_champion_set_before_the_history(store, iris):
    legacy = add(store, iris, test_accuracy=0.5)
    store.promote("iris", legacy)  # the bare pointer move: no history entry
    promote(store, "iris", add(store, iris, test_accuracy=0.6))
    assert rollback(store, "iris").version == legacy


def test_promoting_the_champion_again_changes_nothing(store, iris):
    version = add(store, iris, test_accuracy=0.5)
    promote(store, "iris", version)
    again = promote(store, "iris", version)
    assert again.action == "unchanged" and again.pointer.generation == 1
    assert len(history.read(store, "iris")) == 1


def test_a_refused_sweep_version_stays_registered_not_promoted(store, iris, tmp_path):
    champion = add(store, iris, test_accuracy=0.99)
    promote(store, "iris", champion)
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    for name, payload in iris.to_files().items():
        (checkpoint / name).write_bytes(payload)
    registered = register_checkpoint(
        store, str(checkpoint), {"source": "tune"}, True, prepared("iris")
    )
    assert registered.pointer is None and registered.version in store.versions("iris")
    assert store.pointer("iris").version == champion
    line = registered.promotion_line
    assert line.startswith(f"iris {registered.version} registered, not promoted: ")
    assert "\n" not in line and history.read(store, "iris")[-1].action == "refuse"
    assert history.read(store, "iris")[-1].source_run["source"] == "tune"


def test_history_command_table_and_json(capsys, home, iris):
    store = ModelStore(str(home / "store"))
    assert main(["models", "history", "iris"]) == 0
    assert "no promotions of iris recorded" in capsys.readouterr().out
    first, second = add(store, iris, test_accuracy=0.5), add(store, iris, test_accuracy=0.6)
    assert main(["promote", "iris", first]) == 0
    assert main(["promote", "iris", second, "--reason", "better"]) == 0
    out = capsys.readouterr().out
    assert "candidate" in out and "champion" in out and "pass" in out  # the side-by-side table
    assert main(["rollback", "iris"]) == 0
    assert f"rolled back iris {second} -> {first} (generation 3)" in capsys.readouterr().out
    assert main(["models", "history", "iris"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("when (UTC)") and len(table) == 4
    assert "rollback" in table[3] and "0.6000 -> 0.5000" in table[3]
    assert main(["models", "history", "iris", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in entries] == ["promote", "promote", "rollback"]
    assert entries[1]["reason"].startswith("better; passed the gate")
