"""Verbs over the model store: `evaluate`, `models list|show|history`, `predict`, `batch-predict`
(promote and rollback: cli/governance.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from raylife.cli.common import add_store_flag, add_tracking_flags, settings_from
from raylife.cli.flags import add_config_flags, config_values, field_docs
from raylife.cli.governance import add_history_verb
from raylife.cli.tracking import add_sync_verb
from raylife.errors import RaylifeError


def register(verbs: Any) -> None:
    evaluate = verbs.add_parser("evaluate", help="score a stored version on its test split")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--version", help="version id, 'latest' or 'promoted' (default)")
    add_store_flag(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    models = verbs.add_parser(
        "models", help="list or show stored versions, or a model's promotion history"
    )
    models_verbs = models.add_subparsers(
        dest="models_verb", required=True, metavar="list|show|history|sync"
    )
    listing = models_verbs.add_parser("list", help="versions with their metrics (* = promoted)")
    listing.add_argument("model", nargs="?")
    add_store_flag(listing)
    listing.set_defaults(func=cmd_models_list)
    show = models_verbs.add_parser("show", help="one version's full metadata (default: promoted)")
    show.add_argument("model")
    show.add_argument("version", nargs="?")
    add_store_flag(show)
    show.set_defaults(func=cmd_models_show)
    add_history_verb(models_verbs)
    add_sync_verb(models_verbs)

    predict = verbs.add_parser(
        "predict", help="predict with a stored or MLflow-registered version (no Ray needed)"
    )
    predict.add_argument("--model", help="registry key (required unless --model-uri names it)")
    predict.add_argument("--version", help="version id, 'latest' or 'promoted' (default)")
    predict.add_argument(
        "--model-uri",
        metavar="URI",
        help="load from the MLflow registry of --tracking-uri instead of the store: "
        "models:/<name>@<alias> (e.g. models:/iris@champion) or models:/<name>/<version>",
    )
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", help="JSON rows (inline, or a .json file) or a .csv file with a header"
    )
    source.add_argument("--image", help="a 28x28 grayscale PNG (mnist)")
    predict.add_argument(
        "--url", help="call a running endpoint (e.g. http://127.0.0.1:8000) instead of the store"
    )
    add_store_flag(predict)
    add_tracking_flags(predict)
    predict.set_defaults(func=cmd_predict)
    add_batch_predict_verb(verbs)


BATCH_FIELDS = [
    "version",
    "use_gpu",
    "actors",
    "batch_size",
    "id_column",
    "overwrite",
    "max_failures",
    "stall_factor",
    "stall_floor_s",
]
"""BatchConfig's fields that are flags as they are (model, input and output are required; the
store comes from --store / RAYLIFE_STORE)."""


def add_batch_predict_verb(verbs: Any) -> None:
    from raylife.inference.batch_predict import (
        BatchConfig,  # lazy: pyarrow and torch, for this verb only
    )

    batch = verbs.add_parser(
        "batch-predict",
        help="score a table or PNG folder of any size on a Ray Data actor pool, into Parquet",
    )
    docs = field_docs(BatchConfig)
    batch.add_argument("--model", required=True, help=docs["model"])
    batch.add_argument("--input", required=True, help=docs["input"])
    batch.add_argument("--output", required=True, help=docs["output"])
    add_config_flags(batch, BatchConfig, BATCH_FIELDS)
    add_store_flag(batch)
    batch.set_defaults(func=cmd_batch_predict)


def cmd_evaluate(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.lifecycle.evaluate import evaluate_artifact
    from raylife.lifecycle.store import ModelStore

    version, artifact = ModelStore(settings_from(args).store_uri).load(args.model, args.version)
    metrics = evaluate_artifact(artifact)
    print(
        f"{args.model} {version} on the test split: "
        + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    )


def cmd_models_show(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.lifecycle.store import ModelStore

    store = ModelStore(settings_from(args).store_uri)
    version = store.resolve(args.model, args.version)
    print(json.dumps({"version": version, **store.metadata(args.model, version)}, indent=2))


def cmd_models_list(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife.lifecycle.store import ModelStore

    store = ModelStore(settings_from(args).store_uri)
    if args.model:
        get_spec(args.model)
    models = [args.model] if args.model else store.models()
    if not models:
        print(f"store {store.uri} is empty; train a model: raylife train --model iris")
    for model in models:
        pointer = store.pointer(model)
        for version in store.versions(model):
            meta = store.metadata(model, version)
            marker = "*" if pointer and pointer.version == version else " "
            shown = ", ".join(
                f"{k} {v:.4f}"
                for k, v in meta["metrics"].items()
                if k.startswith("test_") or k in ("val_accuracy", "val_rmse")
            )
            print(
                f"{marker} {model:<11} {version}  {meta['created_at']}  {meta['run'].get('source', '-'):<5}  {shown}"
            )


def cmd_predict(args: argparse.Namespace) -> None:
    if args.model_uri:
        predictor = _registered_predictor(args)
        source = {"model": predictor.artifact.model, "model_uri": args.model_uri}
    else:
        if not args.model:
            raise RaylifeError(
                "predict needs --model MODEL (the store's version) or --model-uri "
                "models:/<name>@champion (an MLflow registry); pass one"
            )
        if args.url:
            print(json.dumps(_predict_url(args), indent=2))
            return
        # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
        from raylife.inference.predict import Predictor
        from raylife.lifecycle.store import ModelStore

        predictor = Predictor.from_store(
            ModelStore(settings_from(args).store_uri), args.model, args.version
        )
        source = {"model": args.model}
    answers = (
        [predictor.predict_image(args.image)]
        if args.image
        else predictor.predict_rows(read_rows(args.input))
    )
    print(json.dumps({**source, "version": predictor.version, "predictions": answers}, indent=2))


def cmd_batch_predict(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.inference.batch_predict import BatchConfig, batch_predict
    from raylife.lifecycle.store import COMPLETE_MARKER

    cfg = BatchConfig(
        model=args.model,
        input=args.input,
        output=args.output,
        store_uri=settings_from(args).store_uri,
        **config_values(args, BATCH_FIELDS),
    )
    done = batch_predict(cfg)
    print(
        f"{done.model} {done.version}: {done.rows} rows -> {done.output} ({done.files} Parquet "
        f"files + {COMPLETE_MARKER}) in {_seconds(done.seconds)} s "
        f"({done.rows_per_s:,.0f} rows/s; "
        f"scoring {_seconds(done.scoring_seconds)} s at {done.scoring_rows_per_s:,.0f} rows/s, "
        f"the rest is planning, starting {cfg.actors} actor(s) and publishing)"
    )


def _seconds(value: float) -> str:
    """Seconds to print: one decimal from a second up, milliseconds below (a small table scores
    in a few of them, and "0.0 s" would read as nothing done)."""
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def _registered_predictor(args: argparse.Namespace) -> Any:
    """The Predictor of the MLflow model version --model-uri names now."""
    if args.url or args.version:
        raise RaylifeError(
            "--model-uri loads from an MLflow registry: drop --url and --version (name a "
            "version in the URI instead: models:/iris/3)"
        )
    settings = settings_from(args)
    if settings.mlflow_uri is None:
        raise RaylifeError(
            "--model-uri needs an MLflow registry, but tracking is off (--no-tracking or "
            "RAYLIFE_MLFLOW_URI=off); pass --tracking-uri URI"
        )
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.tracking.registry_mirror import RegistryModel

    registry = RegistryModel(args.model_uri, settings.mlflow_uri)
    if args.model and args.model != registry.name:
        raise RaylifeError(
            f"--model {args.model} but --model-uri names {registry.name}; drop --model or "
            "make them agree"
        )
    return registry.load(registry.resolve())


def _predict_url(args: argparse.Namespace) -> Any:
    import httpx

    endpoint = f"{args.url.rstrip('/')}/{args.model}"
    try:
        if args.image:
            image = Path(args.image)
            if not image.is_file():
                raise RaylifeError(f"image file {args.image} not found; pass an existing PNG")
            response = httpx.post(
                f"{endpoint}/image", files={"file": (image.name, image.read_bytes(), "image/png")}
            )
        else:
            rows = read_rows(args.input)
            response = httpx.post(endpoint, json={"rows": rows if _is_batch(rows) else [rows]})
    except httpx.HTTPError as exc:
        raise RaylifeError(f"cannot reach {endpoint} ({exc}); is `raylife serve` running?") from exc
    if response.status_code != 200:
        raise RaylifeError(f"{endpoint} answered {response.status_code}: {response.text[:500]}")
    return response.json()


def _is_batch(rows: Any) -> bool:
    return isinstance(rows, list) and bool(rows) and isinstance(rows[0], (list, dict))


def read_rows(text: str) -> Any:
    """Inline JSON, a .json file, or a .csv file whose header names the features."""
    path = Path(text)
    if text.endswith((".csv", ".json")):
        if not path.is_file():
            raise RaylifeError(
                f"input file {text} not found; pass an existing .json or .csv file or inline JSON"
            )
        if text.endswith(".csv"):
            import pandas as pd

            try:
                return pd.read_csv(path).to_dict(orient="records")
            except Exception as exc:
                raise RaylifeError(
                    f"cannot parse {text} as CSV ({exc}); send a header row plus numeric rows"
                ) from exc
        text = path.read_text()
    try:
        return json.loads(text)
    except RecursionError:
        raise RaylifeError(
            "--input nests deeper than JSON parsing allows; send rows as lists of numbers"
        ) from None
    except json.JSONDecodeError as exc:
        raise RaylifeError(
            f"--input is not valid JSON ({exc.msg} at char {exc.pos}); example: '[[5.1, 3.5, 1.4, 0.2]]'"
        ) from exc
