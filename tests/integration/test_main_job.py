"""`raylife run`, the command the README leads with, end to end at debug size on the session
cluster: a sweep per model, the best trial promoted, evaluated, plotted, served and queried.
Two models (a table and an image model) keep it near two minutes; all four take about six."""

from __future__ import annotations

import json
from pathlib import Path

from raylife.cli import main
from raylife.lifecycle.store import ModelStore
from raylife.serve import local


def test_the_main_job_end_to_end(home: Path, capsys):
    models = ["iris", "mnist"]
    code = main(
        [
            "run",
            "--preset",
            "debug",
            "--samples",
            "2",
            "--models",
            ",".join(models),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    summary = json.loads((home / "run-summary.json").read_text())
    assert [row["model"] for row in summary] == models
    store = ModelStore(str(home / "store"))
    for row in summary:
        model = row["model"]
        assert store.pointer(model).version == row["version"], model
        assert row["trials"] == 2 and row["metric"] in ("accuracy", "rmse")
        assert all(Path(plot).is_file() for plot in row["plots"]), row["plots"]
        # Served over HTTP and asked about its first held-out test row.
        assert f"POST /{model} " in out and f"from version {row['version']}" in out
    assert "Serve stopped" in out
    # Each sweep says how its trials were sized, and the run says where Ray's logs are.
    assert out.count("trials: 1 worker each") == len(models), out[-3000:]
    assert (home / "ray-logs").is_dir() and "Ray's logs" in out
    assert not (home / local.STATE_FILE).exists(), "Serve was left running"
