"""`raylife bench --quick` end to end on the shared cluster: every in-cluster section runs its
contenders for real and writes both reports. No timing is asserted (CI machines vary); the
shapes, the interleaving and the bookkeeping are."""

from __future__ import annotations

import json

import pytest

from raylife.cli import main

pytestmark = pytest.mark.slow


def test_quick_bench_writes_both_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAYLIFE_HOME", str(tmp_path / "home"))
    out = tmp_path / "reports"
    assert main(["bench", "--quick", "--output-dir", str(out)]) == 0

    report = json.loads((out / "bench.json").read_text())
    assert report["meta"]["quick"] is True
    sections = report["sections"]
    assert set(sections) == {"train", "trials", "soak", "tune", "serve", "oip-capture"}

    train = sections["train"]["figures"]
    for figure in ("plain epoch_s", "ray epoch_s", "ray fit_fixed_s"):
        assert train[figure]["median"] > 0, figure
    # fit()'s fixed costs, from rank 0's epoch_s and the reports' arrivals: both real intervals.
    assert train["ray fit_start_s"]["min"] > 0 and train["ray fit_end_s"]["min"] > 0
    # Seconds per report: a few hundredths, read off arrivals each late by up to one 0.05 s poll.
    assert -0.05 < train["ray report_s"]["median"] < 1.0

    trials = sections["trials"]["figures"]
    # The sweep trial's epoch comes from the reports Tune received: a real, positive interval.
    assert trials["iris trial epoch_s"]["min"] > 0 and trials["iris plain epoch_s"]["min"] > 0

    soak = sections["soak"]
    assert soak["extra"]["ddp trials finished"] == 2  # back-to-back 2-worker DDP trials, no hang
    assert soak["figures"]["sweep watch on wall_s"]["median"] > 0
    assert 0 < soak["extra"]["direct cost"]["fraction"] < 1

    tune = sections["tune"]["figures"]
    assert tune["fifo trial_epochs"]["median"] == 4  # 2 trials x 2 debug epochs, nothing stopped
    assert tune["asha best_val"]["median"] > 0  # boston: validation RMSE
    assert tune["same trials alone wall_s"]["median"] > 0
    assert tune["fifo sweep wall_s"]["median"] > 0

    serve = sections["serve"]["figures"]
    assert serve["iris c16 serve errors"]["max"] == 0 and serve["iris c16 bare errors"]["max"] == 0
    assert serve["iris c16 serve rps"]["median"] > 0 and serve["iris c16 bare rps"]["median"] > 0

    oip_capture = sections["oip-capture"]
    assert oip_capture["figures"]["oip errors"]["max"] == 0
    count = oip_capture["extra"]["count check"]  # every request captured once, even at --quick
    assert count["captured rows"] == count["requests"] and count["duplicates"] == 0

    checks = {c["name"] for s in sections.values() for c in s["checks"]}
    assert {"Ray Train epoch / plain epoch", "Iris c=16 Serve / bare throughput"} <= checks
    markdown = (out / "bench.md").read_text()
    assert "| check | value | target | met |" in markdown
    assert "Iris c=16 Serve / bare throughput" in capsys.readouterr().out
