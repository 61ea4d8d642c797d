"""Verbs that train: `train`, `tune` and `run` (the main job). Their flags come from the configs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from raylife.cli.common import add_store_flag, add_tracking_flags, model_list, settings_from
from raylife.cli.flags import add_config_flags, config_values
from raylife.config import DataConfig, Hyperparams, TrainConfig, TuneConfig
from raylife.errors import RaylifeError

HPARAM_FIELDS = [
    "epochs",
    "lr",
    "batch_size",
    "hidden_sizes",
    "conv_channels",
    "dropout",
    "weight_decay",
    "optimizer",
    "activation",
    "lr_schedule",
    "epoch_selection",
]
DATA_FIELDS = ["source", "target", "data_dir", "download", "seed"]
DATA_RENAME = {"source": "data", "seed": "split_seed"}
TRAIN_FIELDS = [
    "num_workers",
    "cpus_per_worker",
    "threads_per_worker",
    "use_gpu",
    "seed",
    "report_interval_s",
    "max_failures",
    "stall_factor",
    "stall_floor_s",
]
SWEEP_TRAIN_FIELDS = [f for f in TRAIN_FIELDS if f != "num_workers"]
"""A sweep's --num-workers is TuneConfig.workers_per_trial (default: decided by measurement)."""
TUNE_FIELDS = [
    "num_samples",
    "workers_per_trial",
    "max_concurrent_trials",
    "scheduler",
    "grace_period",
    "reduction_factor",
    "seed",
    "name",
]
TUNE_RENAME = {
    "num_samples": "samples",
    "max_concurrent_trials": "max_concurrent",
    "workers_per_trial": "num_workers",
    "seed": "tune_seed",
}


def register(verbs: Any) -> None:
    train = verbs.add_parser(
        "train",
        help="train one model with Ray Train and register its checkpoint (best or last epoch)",
    )
    _run_flags(train)
    train.add_argument("--run-name", help="name of the run (default: unique)")
    train.add_argument(
        "--resume", metavar="RUN", help="continue run RUN from its latest checkpoint"
    )
    train.set_defaults(func=cmd_train)

    tune = verbs.add_parser(
        "tune", help="Ray Tune sweep (ASHA); trials sized by measurement (--num-workers to choose)"
    )
    _run_flags(tune, SWEEP_TRAIN_FIELDS)
    add_config_flags(tune.add_argument_group("Ray Tune"), TuneConfig, TUNE_FIELDS, TUNE_RENAME)
    tune.set_defaults(func=cmd_tune)

    run = verbs.add_parser("run", help="the main job: every model through the whole life-cycle")
    run.add_argument("--models", default="all", help="comma-separated model keys (default: all)")
    run.add_argument("--samples", type=int, default=4, help="Tune trials per model")
    run.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="Ray Train workers per trial (default: decided per model by measurement)",
    )
    run.add_argument(
        "--max-concurrent", type=int, default=None, help="trials at once (default: as CPUs hold)"
    )
    _preset_flag(run)
    add_store_flag(run)
    add_tracking_flags(run)
    run.set_defaults(func=cmd_run)


def _preset_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="default",
        help="hyperparameter preset: default | debug (tiny, for tests)",
    )


def _run_flags(parser: argparse.ArgumentParser, train_fields: list[str] = TRAIN_FIELDS) -> None:
    """Flags shared by train and tune: the model, its data, hyperparameters and resources."""
    parser.add_argument(
        "--model", required=True, help="a declared model (`raylife catalog` lists them)"
    )
    _preset_flag(parser)
    add_config_flags(
        parser.add_argument_group("hyperparameters (override the preset)"),
        Hyperparams,
        HPARAM_FIELDS,
        overrides_only=True,
    )
    add_config_flags(parser.add_argument_group("data"), DataConfig, DATA_FIELDS, DATA_RENAME)
    add_config_flags(parser.add_argument_group("Ray Train"), TrainConfig, train_fields)
    parser.add_argument(
        "--promote",
        action="store_true",
        help="promote the registered version if it passes the promotion gate (it serves)",
    )
    add_store_flag(parser)
    add_tracking_flags(parser)


def train_config(
    args: argparse.Namespace, run_name: str | None = None, fields: list[str] = TRAIN_FIELDS
) -> TrainConfig:
    """The run's TrainConfig (a sweep's base takes SWEEP_TRAIN_FIELDS: its workers per trial
    are the TuneConfig's)."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec

    hparams = get_spec(args.model).preset(args.preset).replace(**config_values(args, HPARAM_FIELDS))
    data = DataConfig(**config_values(args, DATA_FIELDS, DATA_RENAME))
    return TrainConfig(
        model=args.model,
        hparams=hparams,
        data=data,
        run_name=run_name,
        **config_values(args, fields),
    )


def cmd_train(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.lifecycle.train_and_store import train_and_register
    from raylife.training.train import storage_path

    settings = settings_from(args)
    if args.resume:
        _require_run(storage_path(settings), args.resume)
    cfg = train_config(args, run_name=args.resume or args.run_name)
    outcome, registered = train_and_register(cfg, settings, promote=args.promote)
    print(
        f"run {outcome.run_name}: {len(outcome.history)} epochs, checkpoint of epoch "
        f"{outcome.metrics.get('epoch', 0):.0f} ({cfg.hparams.epoch_selection} epoch) {outcome.checkpoint_path}"
    )
    print_registered(registered)


def _require_run(storage: str, name: str) -> None:
    if "://" not in storage and not (Path(storage) / name).is_dir():
        existing = (
            sorted(p.name for p in Path(storage).glob("train-*"))[-3:]
            if Path(storage).is_dir()
            else []
        )
        raise RaylifeError(
            f"no run named {name!r} under {storage}; recent runs: {', '.join(existing) or 'none'}"
        )


def cmd_tune(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.lifecycle.train_and_store import tune_and_register

    tune_cfg = TuneConfig(**config_values(args, TUNE_FIELDS, TUNE_RENAME))
    outcome, registered = tune_and_register(
        train_config(args, fields=SWEEP_TRAIN_FIELDS),
        tune_cfg,
        settings_from(args),
        promote=args.promote,
    )
    print(f"sweep {outcome.name}:")
    print(outcome.trials.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    best = {k: list(v) if isinstance(v, tuple) else v for k, v in outcome.best_config.items()}
    print(f"best config: {json.dumps(best)}")
    print_registered(registered)


def print_registered(registered: Any) -> None:
    art = registered.artifact
    metrics = ", ".join(
        f"{k} {v:.4f}"
        for k, v in art.metrics.items()
        if k.startswith(("val_", "test_")) and k != "val_objective"
    )
    print(f"registered {art.model} version {registered.version}: {metrics}")
    if registered.promotion and registered.promotion.comparison:
        print(registered.promotion.comparison.table())
    print(registered.promotion_line)


def cmd_run(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.cli.main_job import run_all

    run_all(
        model_list(args.models),
        settings_from(args),
        samples=args.samples,
        num_workers=args.num_workers,
        max_concurrent=args.max_concurrent,
        preset=args.preset,
    )
