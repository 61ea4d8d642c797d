"""Verbs over the model catalogue: `init` (declare a model from a table) and `catalog` (list the
declared models). `--models-dir` (every verb) points at the folder of the user's declarations."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from raylife.catalog.lookup import (
    DEFAULT_DIR,
    MODELS_ENV,
    catalogue,
    is_packaged,
    models_dir,
)


def register(verbs: Any) -> None:
    init = verbs.add_parser(
        "init", help="declare a model from a table: NAME.toml in the models folder"
    )
    init.add_argument("name", help="the model's name (route, store folder, --model value)")
    init.add_argument(
        "--data", required=True, help="CSV or Parquet: path, file://, http(s)://, s3://"
    )
    init.add_argument("--target", required=True, help="the column to predict")
    init.add_argument(
        "--task",
        choices=("binary", "multiclass", "regression"),
        help="override the task inferred from the target column",
    )
    init.add_argument("--module", action="store_true", help="also write NAME.py, a factory to edit")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(func=cmd_init)

    listing = verbs.add_parser("catalog", help="the declared models (packaged and the user's)")
    listing.set_defaults(func=cmd_catalog)


def add_models_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"folder of model declarations (default: ${MODELS_ENV}, else ./{DEFAULT_DIR})",
    )


def apply_models_dir(args: argparse.Namespace) -> None:
    """--models-dir wins over $RAYLIFE_MODELS; exported, so Ray processes started here see it."""
    folder = getattr(args, "models_dir", None)
    if folder:
        os.environ[MODELS_ENV] = str(Path(folder).expanduser().resolve())


def cmd_init(args: argparse.Namespace) -> None:
    # lazy: the CLI loads a verb's modules (pandas, the table reader) only when it runs
    from raylife.catalog import scaffold

    folder = models_dir() or DEFAULT_DIR.resolve()
    written, notes = scaffold.write(
        args.name, args.data, args.target, folder, args.task, args.module, args.force
    )
    for note in notes:
        print(f"  {note}")
    for path in written:
        print(f"wrote {path}")
    hint = "" if folder == DEFAULT_DIR.resolve() else f" --models-dir {folder}"
    print(f"next: raylife run{hint} --models {args.name}")


def cmd_catalog(args: argparse.Namespace) -> None:
    specs = catalogue()
    width = max(len(name) for name in specs)
    for name, spec in specs.items():
        data = spec.data.embedded or spec.data.uri
        where = "packaged" if is_packaged(spec) else (spec.source.path if spec.source else "")
        print(f"{name:<{width}}  {spec.task:<10}  {spec.architecture:<16}  {data}  ({where})")
