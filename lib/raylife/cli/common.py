"""What every verb group shares: one-line usage errors, the store flag, settings, list flags."""

from __future__ import annotations

import argparse
from typing import NoReturn

from raylife.errors import RaylifeError
from raylife.settings import Settings

EXIT_USER_ERROR = 2


class OneLineErrors(argparse.ArgumentParser):
    """Usage errors (wrong type, bad choice, missing flag) in one line that points at the fix,
    instead of argparse's usage block; exit code 2 as argparse. Subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def add_store_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        help="model store: folder or s3://bucket/prefix (default: $RAYLIFE_STORE or $RAYLIFE_HOME/store)",
    )


def add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri and --no-tracking: where runs and store versions are tracked in MLflow."""
    group = parser.add_argument_group("MLflow tracking")
    group.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI, e.g. http://127.0.0.1:5000 (default: $RAYLIFE_MLFLOW_URI or "
        "the local store sqlite:///$RAYLIFE_HOME/mlflow/mlflow.db)",
    )
    group.add_argument(
        "--no-tracking",
        action="store_true",
        help="track nothing in MLflow (as RAYLIFE_MLFLOW_URI=off)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        store=getattr(args, "store", None),
        tracking_uri=getattr(args, "tracking_uri", None),
        tracking=not getattr(args, "no_tracking", False),
    )


def model_list(text: str) -> list[str]:
    """`all` or comma-separated registry keys, each checked (unknown keys name the choices)."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec, model_names

    if text == "all":
        return list(model_names())
    models = [get_spec(name.strip()).name for name in text.split(",") if name.strip()]
    if not models:
        raise RaylifeError(f"--models {text!r} names no model; pass e.g. iris,mnist or all")
    return models


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise RaylifeError(f"--seeds takes comma-separated integers like 0,1,2, got {text!r}")
    return seeds
