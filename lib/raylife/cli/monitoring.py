"""`raylife monitor MODEL`: drift in the promoted version's captured traffic (exit 3 on drift).
`raylife retrain MODEL`: a sweep on the model's data plus its labelled traffic; a winner that beats
the champion goes into a canary (raylife.monitoring.retrain says how it is judged)."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from typing import Any

from raylife.cli.common import add_store_flag, add_tracking_flags, settings_from
from raylife.errors import RaylifeError
from raylife.settings import Settings

UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(verbs: Any) -> None:
    monitor = verbs.add_parser(
        "monitor",
        help="judge the promoted version's captured traffic for drift, window by window "
        "(exit 0: no drift, 3: drift, 2: nothing to judge yet)",
    )
    monitor.add_argument("model", help="the model's name")
    monitor.add_argument(
        "--window-requests",
        type=int,
        default=None,
        metavar="N",
        help="captured requests per window (default: the declaration's [monitor], 500)",
    )
    monitor.add_argument("--version", default=None, help="version to judge (default: promoted)")
    monitor.add_argument(
        "--every",
        default=None,
        metavar="DURATION",
        help="run again every DURATION (90s, 15m, 1h, 1d) until Ctrl-C; a scheduler can run "
        "it once per period instead",
    )
    add_store_flag(monitor)
    add_tracking_flags(monitor)
    monitor.set_defaults(func=cmd_monitor)

    retrain = verbs.add_parser(
        "retrain",
        help="sweep on the model's data plus its captured rows with feedback; a winner that beats "
        "the champion on recent traffic starts a canary",
    )
    retrain.add_argument("model", help="the model's name")
    retrain.add_argument(
        "--when-drifted",
        action="store_true",
        help="only when the monitor's latest window of the promoted version drifted",
    )
    retrain.add_argument("--samples", type=int, default=4, help="trials of the sweep (default 4)")
    retrain.add_argument(
        "--debug", action="store_true", help="the declaration's [debug] preset (tests, smoke runs)"
    )
    retrain.add_argument(
        "--canary", default="10,50,100", help="canary steps in percent (default 10,50,100)"
    )
    retrain.add_argument("--dwell-s", type=float, default=60.0, help="seconds per canary step")
    add_store_flag(retrain)
    add_tracking_flags(retrain)
    retrain.set_defaults(func=cmd_retrain)


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not match or float(match[1]) <= 0:
        raise RaylifeError(
            f"--every {text!r}: give a positive number and a unit, e.g. 90s, 15m, 1h"
        )
    return float(match[1]) * UNITS_S[match[2]]


def cmd_monitor(args: argparse.Namespace) -> int:
    period = parse_duration(args.every) if args.every else None
    if period is None:
        return monitor_once(args)
    while True:  # Ctrl-C ends it (exit 130)
        try:
            monitor_once(args)
        except RaylifeError as exc:  # nothing to judge yet: say so, try again next period
            print(f"raylife: {' '.join(str(exc).split())}")
        time.sleep(period)


def monitor_once(args: argparse.Namespace) -> int:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife.lifecycle.store import ModelStore
    from raylife.monitoring import monitor
    from raylife.tracking.runs import config_for

    settings = settings_from(args)
    store = ModelStore(settings.store_uri)
    spec = get_spec(args.model)
    reports = monitor.run_declared(
        store, spec, args.window_requests, args.version, config_for(settings)
    )
    for report in reports:
        print(report.line())
        for finding in report.drifted:
            print(f"  {finding.line()}")
        for path in report.files:
            print(f"  wrote {path}")
    return monitor.EXIT_DRIFT if any(r.drifted for r in reports) else 0


def cmd_retrain(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.serve import canary

    steps = canary.parse_steps(args.canary)
    if args.samples < 1 or not args.dwell_s > 0:
        raise RaylifeError("--samples must be at least 1 and --dwell-s above 0")
    retrain_and_roll_out(
        settings_from(args),
        args.model,
        args.when_drifted,
        args.samples,
        args.debug,
        steps,
        args.dwell_s,
    )


def retrain_and_roll_out(
    settings: Settings,
    model: str,
    when_drifted: bool,
    samples: int,
    debug: bool,
    steps: tuple[float, ...],
    dwell_s: float,
    say: Callable[[str], None] = print,
) -> tuple[str, dict[str, float]]:
    """The retrain's steps (raylife.monitoring.retrain), then a canary on the running local Serve
    app. Returns what happened (nothing | refused | no_serve | promoted | rolled_back) and the
    candidate's figures against the champion."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife.config import DataConfig, TrainConfig, TuneConfig
    from raylife.lifecycle.store import ModelStore
    from raylife.lifecycle.train_and_store import tune_and_register
    from raylife.monitoring import retrain
    from raylife.serve import canary
    from raylife.serve import local as serving

    spec = get_spec(model)
    store = ModelStore(settings.store_uri)
    champion_version, champion = store.load(spec.name)
    reason = retrain.drift_reason(store, spec.name, champion_version) if when_drifted else ""
    if when_drifted and not reason:
        say(f"{spec.name} {champion_version}: its latest window did not drift; nothing to do")
        return "nothing", {}
    why = f"retrain ({reason or 'requested'})"
    table = retrain.build_table(store, spec, champion)
    say(f"{why}: {table.rows} rows ({table.captured} captured with feedback) in {table.uri}")
    data = DataConfig(
        **{**champion.run.get("data_config", {}), "source": table.uri, "target": table.target}
    )
    base = TrainConfig(model=spec.name, hparams=spec.debug if debug else spec.defaults, data=data)
    _, registered = tune_and_register(base, TuneConfig(num_samples=samples), settings, False)
    verdict = retrain.judge(spec, registered.artifact, champion, table)
    say(f"{spec.name} {registered.version} vs champion {champion_version}: {verdict.line}")
    note = f"{why}: {verdict.line}"
    if not verdict.better:
        retrain.record_refusal(
            store, spec.name, champion_version, registered.version, note, verdict.figures
        )
        say(f"nothing changed: {champion_version} keeps serving")
        return "refused", verdict.figures
    local = serving.read_state(settings)
    if local is None or spec.name not in local.models:  # no Serve app here (a RayJob on EKS)
        text = ",".join(f"{step:g}" for step in steps)
        say(
            f"no running local Serve app serves {spec.name}; roll {registered.version} out with: "
            f"raylife promote {spec.name} {registered.version} --canary {text}"
        )
        return "no_serve", verdict.figures
    plan = canary.Plan(spec.name, registered.version, steps, dwell_s, note=note)
    result = canary.run(settings, plan, say=say)
    say(result.line)
    return result.action, verdict.figures
