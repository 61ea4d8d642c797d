"""`raylife`: one CLI for the life-cycle. Every user mistake ends in one line naming the fix.

The verbs live in one module per group; `raylife --help` lists them all:
  training.py  train, tune, run (the main job)
  models.py    evaluate, models list|show|history|sync, predict
  governance.py  promote (gated), rollback, models history
  tracking.py  ui (MLflow UI of the local store), models sync (MLflow registry mirror)
  serving.py   serve, serve-configs
  monitoring.py  monitor (drift in captured traffic), retrain (a sweep on labelled traffic, a verdict, a canary)
  deploy.py    kuberay-manifests
Developer verbs (quality, selection-study, bench, report-cost, gpu-check, loadtest, rehearse,
rehearse-ha, make-table) come from raylife_dev.cli where the dev package is installed.
Flags that set a config field come from the config dataclasses (flags.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from raylife.cli import (
    catalog,
    deploy,
    governance,
    models,
    monitoring,
    serving,
    tracking,
    training,
)
from raylife.cli.common import EXIT_USER_ERROR, OneLineErrors
from raylife.errors import RaylifeError

__all__ = ["EXIT_USER_ERROR", "build_parser", "main"]


def build_parser() -> OneLineErrors:
    parser = OneLineErrors(prog="raylife", description="The PyTorch ML lifecycle on Ray.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for group in (catalog, training, governance, models, serving, monitoring, tracking, deploy):
        group.register(verbs)
    _register_dev_verbs(verbs)
    catalog.add_models_dir_flag(parser)
    for verb in verbs.choices.values():
        catalog.add_models_dir_flag(verb)
    return parser


def _register_dev_verbs(verbs: Any) -> None:
    """The developer verbs, where raylife_dev is installed (`make install`); the image has none."""
    try:
        # lazy: raylife_dev is optional (installed by the dev extra, absent from the wheel and image)
        from raylife_dev import cli as dev_cli
    except ModuleNotFoundError as exc:
        if exc.name != "raylife_dev":
            raise
        return
    dev_cli.register(verbs)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, also in logs
    try:
        catalog.apply_models_dir(args)
        code = args.func(args)  # a verb returns an exit code when it has one to give (monitor)
    except RaylifeError as exc:
        # One line even when a message quotes a multi-line library error (YAML, pydantic).
        print(f"raylife: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("raylife: interrupted", file=sys.stderr)
        return 130
    finally:
        _shutdown_ray()
    return int(code or 0)


def _shutdown_ray() -> None:
    """Stop the local cluster this command started, so the process exits without teardown noise."""
    if "ray" in sys.modules:
        # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
        from raylife.cluster import shutdown_if_started

        shutdown_if_started()
