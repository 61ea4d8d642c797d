"""`raylife monitor MODEL`: drift in the promoted version's captured traffic (exit 3 on drift)."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from raylife.cli.common import add_store_flag, add_tracking_flags, settings_from
from raylife.errors import RaylifeError

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
    from raylife.monitoring import drift, monitor
    from raylife.tracking.runs import config_for

    spec = get_spec(args.model)
    declared = spec.monitor
    window = args.window_requests or declared.window_requests
    if window < 1:
        raise RaylifeError(f"--window-requests {window}: give a positive number of requests")
    settings = settings_from(args)
    thresholds = drift.Thresholds(declared.alpha, declared.psi, declared.min_rows)
    reports = monitor.run(
        ModelStore(settings.store_uri),
        spec.name,
        thresholds,
        window,
        args.version,
        config_for(settings),
        (spec.gate.absolute, spec.gate.relative),
    )
    for report in reports:
        print(report.line())
        for finding in report.drifted:
            print(f"  {finding.line()}")
        for path in report.files:
            print(f"  wrote {path}")
    return monitor.EXIT_DRIFT if any(r.drifted for r in reports) else 0
