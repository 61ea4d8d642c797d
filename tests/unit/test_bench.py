"""The benchmark's bookkeeping without Ray: interleaving, medians, checks, reports, the plain loop."""

from __future__ import annotations

import json

import pytest

from raylife.catalog.lookup import get_spec
from raylife.config import TrainConfig
from raylife.data.prepare import prepare
from raylife.errors import RaylifeError
from raylife_dev.bench import report, runner
from raylife_dev.bench.stats import Section, alternate
from raylife_dev.bench.train_bench import (
    Arrival,
    ReportClock,
    plain_fit,
    steady_epoch_s,
    worker_timeline,
)


def test_alternate_interleaves_and_passes_the_round():
    calls = []

    def contender(name):
        def run(round_index):
            calls.append((name, round_index))
            return {"value": round_index * 10 + (1 if name == "a" else 2)}

        return run

    measured = alternate({"a": contender("a"), "b": contender("b")}, 3, say=lambda _: None)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert measured == {"a": {"value": [1, 11, 21]}, "b": {"value": [2, 12, 22]}}


def test_section_medians_ratios_and_checks():
    section = Section("x", {})
    section.add("slow", [3.0, 1.0, 2.0], "s")
    section.add("fast", [1.0, 1.0, 4.0], "s")
    assert section.figures["slow"].median == 2.0
    assert section.ratio("slow", "fast") == 2.0
    section.check("ratio", 2.0, "<=", 1.05)
    section.check("floor", 2.0, ">=", 0.8)
    assert [c.met for c in section.checks] == [False, True]


def test_steady_epoch_time_skips_the_first_epoch():
    # epoch 1 is slow (warm-up); epochs 2-4 take 1 s each, with 0.5 s of reporting between them.
    epochs = [[0.0, 10.0], [10.5, 11.5], [12.0, 13.0], [13.5, 14.5]]
    assert steady_epoch_s(epochs) == pytest.approx((14.5 - 10.5) / 3)
    with pytest.raises(ValueError):
        steady_epoch_s([[0.0, 1.0]])


def test_worker_timeline_is_rebuilt_from_report_arrivals_and_epoch_seconds():
    # The timeline above: epochs of 10, 1, 1, 1 s compute, 0.5 s from each epoch's end to the
    # arrival of its report at the controller.
    arrivals = [Arrival(10.5, 1, 10.0), Arrival(12.0, 2, 1.0), Arrival(13.5, 3, 1.0)]
    arrivals.append(Arrival(15.0, 4, 1.0))
    epochs, gap = worker_timeline(arrivals)
    assert gap == pytest.approx(0.5)
    expected = [0.0, 10.0, 10.5, 11.5, 12.0, 13.0, 13.5, 14.5]
    assert [t for span in epochs for t in span] == pytest.approx(expected)
    assert steady_epoch_s(epochs) == pytest.approx((14.5 - 10.5) / 3)
    for broken in (arrivals[1:], arrivals[:2] + arrivals[1:2], arrivals[:1]):
        with pytest.raises(ValueError):  # epoch 1 missing, an epoch twice, one epoch
            worker_timeline(broken)


def test_report_clock_queues_rank_zeros_epoch_and_epoch_seconds():
    class Queued(list):
        put = list.append

    queued = Queued()
    rows = [{"epoch": 2.0, "epoch_s": 1.5, "val_objective": 0.3}, {"epoch": 2.0, "epoch_s": 9.0}]
    ReportClock(queued).after_report(None, rows, None)
    [(at, epoch, epoch_s)] = queued  # plain numbers: the queue's actor imports nothing
    assert (epoch, epoch_s) == (2, 1.5) and at > 0


def test_plain_loop_runs_the_shared_training_code():
    spec = get_spec("iris")
    cfg = TrainConfig(model="iris", hparams=spec.debug.replace(epochs=3), num_workers=1)
    measured = plain_fit(cfg, prepare(spec, cfg.data))
    assert measured["epoch_s"] > 0


def test_reports_carry_every_figure_and_mark_missed_targets(tmp_path):
    section = Section("train", {"model": "mnist"})
    section.add("ray epoch_s", [1.2, 1.1, 1.3], "s")
    section.check("Ray Train epoch / plain epoch", 1.2, "<=", 1.05)
    meta = {
        "quick": False,
        "started": "t",
        "seconds": 1.0,
        "ray": "r",
        "torch": "t",
        "machine": "m",
    }
    json_path, md_path = report.write(tmp_path, [section], meta)
    saved = json.loads(json_path.read_text())
    assert saved["sections"]["train"]["figures"]["ray epoch_s"]["median"] == 1.2
    assert saved["sections"]["train"]["checks"][0]["met"] is False
    assert (
        "| train: Ray Train epoch / plain epoch | 1.20 | <= 1.05 | **no** |" in md_path.read_text()
    )


def test_sections_are_validated():
    quick = ["train", "trials", "soak", "tune", "serve", "oip-capture"]
    assert runner.parse_sections(None, quick=True) == quick
    assert runner.parse_sections("lifecycle,train", quick=False) == ["train", "lifecycle"]
    with pytest.raises(RaylifeError, match="unknown bench section"):
        runner.parse_sections("train,gpu", quick=False)


def test_bench_help_lists_every_section(capsys):
    from raylife.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    shown = "".join(capsys.readouterr().out.split())  # argparse wraps lines, even at hyphens
    assert ",".join(runner.SECTIONS) in shown and ",".join(runner.QUICK_SECTIONS) in shown


def test_trial_epoch_time_is_read_from_the_reports_tune_received():
    import pandas as pd

    from raylife_dev.bench.trials_bench import trial_epoch_s

    history = pd.DataFrame({"epoch": [1, 4, 10], "time_total_s": [5.0, 5.6, 6.8]})
    assert trial_epoch_s(history) == pytest.approx(0.2)  # (6.8 - 5.0) / 9 epochs
    with pytest.raises(ValueError, match="at least two epochs"):
        trial_epoch_s(history.iloc[:1])
