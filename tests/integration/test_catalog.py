"""Bring your own model, on the session's Ray cluster: a table and an `nn.Module` factory in a
folder outside the package go through init, DDP training, a sweep, promotion, Serve over HTTP,
batch inference, a canary and a rollback, all by the model's own name."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from raylife.catalog import lookup
from raylife.cli import main
from raylife.lifecycle import history
from raylife.lifecycle.store import ModelStore
from tests.unit.test_batch_predict import assert_same_answers

MODEL = "churn"
FEATURES = [f"f{i}" for i in range(6)]


def churn_table(path: Path, rows: int, seed: int = 0) -> pd.DataFrame:
    """A learnable binary table with an id column: the label is a noisy linear rule."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, len(FEATURES)))
    logit = X[:, 0] + 0.8 * X[:, 1] - 0.6 * X[:, 2] + 0.3 * rng.normal(size=rows)
    frame = pd.DataFrame(X, columns=FEATURES)
    frame.insert(0, "id", np.arange(rows))
    frame["churned"] = (logit > 0).astype(int)
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory):
    """A user's folder (table + models/) and an isolated RAYLIFE_HOME, for the whole module."""
    root = tmp_path_factory.mktemp("byo")
    frame = churn_table(root / "churn.csv", rows=800)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYLIFE_HOME", str(root / "home"))
        patch.delenv("RAYLIFE_STORE", raising=False)
        patch.setenv(lookup.MODELS_ENV, str(root / "models"))
        patch.chdir(root)
        (root / "models").mkdir()
        yield root, frame


def raylife(*argv: str) -> int:
    return main(list(argv))


def test_a_users_own_model_through_the_whole_lifecycle(user: Any, capsys: Any) -> None:
    root, frame = user
    assert raylife("init", MODEL, "--data", "churn.csv", "--target", "churned", "--module") == 0
    said = capsys.readouterr().out
    assert "task: binary (inferred" in said and "id column 'id'" in said
    factory = (root / "models" / "churn.py").read_text()
    assert "class Residual" in factory  # the user's own module, not a built-in MLP

    # Two DDP workers, by name; the artifact records the declaration and the code.
    assert (
        raylife("train", "--model", MODEL, "--preset", "debug", "--num-workers", "2", "--promote")
        == 0
    )
    store = ModelStore(str(root / "home" / "store"))
    [first] = store.versions(MODEL)
    meta = store.metadata(MODEL, first)
    assert meta["architecture"] == "churn:build" and meta["run"]["num_workers"] == 2
    assert meta["code"]["module"] == "churn" and meta["code"]["source"] == factory
    assert meta["declaration"]["path"].endswith("models/churn.toml")
    assert meta["schema"]["feature_names"] == FEATURES  # the id column stayed out

    # A sweep of two trials registers its best (gated against the champion).
    assert raylife("tune", "--model", MODEL, "--preset", "debug", "--samples", "2") == 0
    second = store.versions(MODEL)[-1]
    assert second != first
    capsys.readouterr()

    # Serve over HTTP at /churn; the answer comes from the promoted version.
    from raylife.cluster import free_port
    from raylife.serve import canary
    from raylife.serve import local as serving
    from raylife.settings import Settings

    settings = Settings.from_env()
    local = serving.start(settings, [MODEL], port=free_port())
    try:
        row = frame.loc[0, FEATURES].tolist()
        answer = httpx.post(f"{local.url}/{MODEL}", json={"row": row}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == first
        assert answer.json()["predictions"][0]["label"] in ("0", "1")

        # A canary of the sweep's version under live traffic reaches 100 %, then a rollback
        # points the model back at the first version.
        answers: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    answers.append(
                        client.post(f"{local.url}/{MODEL}", json={"row": row}).status_code
                    )

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        # Short dwell times carry too few requests for the latency and metric gates.
        gates = canary.Gates(min_requests=5, min_feedback=10**6, min_latency_samples=10**6)
        result = canary.run(
            settings,
            canary.Plan(MODEL, second, (50.0, 100.0), dwell_s=1.5, gates=gates),
            say=lambda line: None,
        )
        stop.set()
        thread.join(timeout=30)
        assert result.action == "promoted", result.line
        assert set(answers) == {200}, answers
        assert store.pointer(MODEL).version == second
        assert raylife("rollback", MODEL) == 0
        assert store.pointer(MODEL).version == first
        assert [e.action for e in history.read(store, MODEL)][-1] == "rollback"
    finally:
        serving.stop(settings)

    # Batch inference by name equals `raylife predict` row for row.
    frame[FEATURES].iloc[:50].to_parquet(root / "rows.parquet")
    out = root / "scored"
    assert (
        raylife(
            "batch-predict",
            "--model",
            MODEL,
            "--input",
            str(root / "rows.parquet"),
            "--output",
            str(out),
            "--actors",
            "1",
        )
        == 0
    )
    table = pq.read_table(out).sort_by("row_id").to_pylist()
    frame[FEATURES].iloc[:50].to_csv(root / "rows.csv", index=False)
    capsys.readouterr()
    assert raylife("predict", "--model", MODEL, "--input", str(root / "rows.csv")) == 0
    answers_ = json.loads(capsys.readouterr().out)
    assert_same_answers(table, answers_["predictions"], answers_["version"])
