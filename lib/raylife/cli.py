"""`raylife`: one CLI for the life-cycle. Every user mistake ends in one line naming the fix.

raylife train    --model iris [--epochs 50 --lr 0.01 ...] [--resume RUN] [--promote]
raylife tune     --model mnist --samples 4 [--promote]
raylife evaluate --model iris [--version V]
raylife promote  MODEL VERSION
raylife models   list [MODEL] | show MODEL [VERSION]
raylife predict  --model iris --input '[[5.1, 3.5, 1.4, 0.2]]' | --input rows.csv | --image digit.png
raylife run      (the main job: every model through the whole life-cycle)
raylife quality  (registry defaults x 3 seeds -> reports/quality.json)
raylife selection-study [--models iris]   (best vs last epoch, CV off the quality test rows)
raylife serve    [--port 8000] [--models iris,mnist]   (Ray Serve, foreground; Ctrl-C stops)
raylife loadtest --model iris [--concurrency 16 --requests 2000] [--baseline] [--json]
raylife serve-configs   (render serve_apps/config base + overlays -> serve_apps/rendered/)
raylife bench    [--quick] [--sections train,tune,serve,lifecycle]   (-> reports/bench.{json,md})
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from raylife import serving
from raylife.errors import RaylifeError

EXIT_USER_ERROR = 2


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors (wrong type, bad choice, missing flag) in one line that points at the fix,
    instead of argparse's usage block; exit code 2 as argparse. Subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 64,32, got {text!r}"
        ) from None
    if not sizes:
        raise argparse.ArgumentTypeError("expected at least one size, like 64,32")
    return sizes


def _store_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        help="model store: folder or s3://bucket/prefix (default: $RAYLIFE_STORE or $RAYLIFE_HOME/store)",
    )


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by train and tune: the model, its data, hyperparameters and resources."""
    parser.add_argument("--model", required=True, help="boston | ionosphere | iris | mnist")
    parser.add_argument(
        "--preset",
        default="default",
        help="hyperparameter preset: default | debug (tiny, for tests)",
    )
    hp = parser.add_argument_group("hyperparameters (override the preset)")
    hp.add_argument("--epochs", type=int)
    hp.add_argument("--lr", type=float, help="learning rate")
    hp.add_argument("--batch-size", type=int, help="GLOBAL batch size, split across workers")
    hp.add_argument("--hidden-sizes", type=_sizes, help="hidden layer widths, e.g. 64,32")
    hp.add_argument("--conv-channels", type=_sizes, help="CNN conv block channels, e.g. 32,64")
    hp.add_argument("--dropout", type=float)
    hp.add_argument("--weight-decay", type=float)
    hp.add_argument("--optimizer", choices=["adam", "sgd"])
    hp.add_argument("--activation", choices=["relu", "sigmoid", "tanh"])
    hp.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        help="learning rate over the epochs: constant, or cosine decay towards 0",
    )
    hp.add_argument(
        "--epoch-selection",
        choices=["best", "last"],
        help="weights a run yields: best validation epoch, or the last epoch",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default="embedded",
        help="embedded | torchvision (full MNIST) | CSV/Parquet path, http(s):// or s3:// URL",
    )
    data.add_argument("--target", help="target column of a --data table")
    data.add_argument("--data-dir", help="folder for full MNIST (torchvision)")
    data.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download full MNIST (needs internet)",
    )
    data.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
    res = parser.add_argument_group("Ray Train")
    res.add_argument("--num-workers", type=int, default=2, help="DDP workers (default 2)")
    res.add_argument("--cpus-per-worker", type=float, default=1.0)
    res.add_argument(
        "--threads-per-worker", type=int, default=1, help="torch threads in each worker"
    )
    res.add_argument("--use-gpu", action="store_true", help="one GPU per worker (NCCL)")
    res.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order")
    res.add_argument(
        "--report-interval-s",
        type=float,
        default=2.0,
        help="longest gap between reports/checkpoints when nothing improves (0 = every epoch)",
    )
    res.add_argument(
        "--max-failures", type=int, default=2, help="worker-group restarts from the last checkpoint"
    )
    parser.add_argument(
        "--promote", action="store_true", help="promote the registered version (it serves)"
    )
    _store_flag(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="raylife", description="The PyTorch ML lifecycle on Ray.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    train = verbs.add_parser(
        "train",
        help="train one model with Ray Train and register its checkpoint (best or last epoch)",
    )
    _run_flags(train)
    train.add_argument("--run-name", help="name of the run (default: unique)")
    train.add_argument(
        "--resume", metavar="RUN", help="continue run RUN from its latest checkpoint"
    )

    tune = verbs.add_parser("tune", help="Ray Tune sweep (ASHA) whose trials are Ray Train runs")
    _run_flags(tune)
    tune.add_argument("--samples", type=int, default=4, help="number of trials")
    tune.add_argument("--max-concurrent", type=int, default=1, help="trials at once")
    tune.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    tune.add_argument(
        "--tune-seed", type=int, default=0, help="seed of the hyperparameter sampling"
    )
    tune.add_argument("--name", help="sweep name; an interrupted sweep of the same name resumes")

    evaluate = verbs.add_parser("evaluate", help="score a stored version on its test split")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--version", help="version id, 'latest' or 'promoted' (default)")
    _store_flag(evaluate)

    promote = verbs.add_parser("promote", help="make VERSION the one that serves MODEL")
    promote.add_argument("model")
    promote.add_argument("version", help="version id or 'latest'")
    _store_flag(promote)

    models = verbs.add_parser("models", help="list or show stored versions")
    models_verbs = models.add_subparsers(dest="models_verb", required=True, metavar="list|show")
    listing = models_verbs.add_parser("list", help="versions with their metrics (* = promoted)")
    listing.add_argument("model", nargs="?")
    _store_flag(listing)
    show = models_verbs.add_parser("show", help="one version's full metadata (default: promoted)")
    show.add_argument("model")
    show.add_argument("version", nargs="?")
    _store_flag(show)

    predict = verbs.add_parser("predict", help="predict with a stored version (no Ray needed)")
    predict.add_argument("--model", required=True)
    predict.add_argument("--version", help="version id, 'latest' or 'promoted' (default)")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", help="JSON rows (inline, or a .json file) or a .csv file with a header"
    )
    source.add_argument("--image", help="a 28x28 grayscale PNG (mnist)")
    predict.add_argument(
        "--url", help="call a running endpoint (e.g. http://127.0.0.1:8000) instead of the store"
    )
    _store_flag(predict)

    serve = verbs.add_parser("serve", help="serve the promoted models with Ray Serve (foreground)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--models", default="all", help="comma-separated model keys (default: all)")
    serve.add_argument(
        "--num-gpus", type=float, default=0.0, help="GPUs per model replica (e.g. 0.5; default 0)"
    )
    _store_flag(serve)

    load = verbs.add_parser("loadtest", help="drive an endpoint at a concurrency; rps and latency")
    load.add_argument("--model", default="iris")
    load.add_argument("--url", help="running endpoint (default: start a local Serve for the test)")
    load.add_argument("--concurrency", type=int, default=16)
    load.add_argument("--requests", type=int, default=2000)
    load.add_argument(
        "--retries", type=int, default=0, help="retries on connection errors / 500, 502, 503, 504"
    )
    load.add_argument(
        "--baseline",
        action="store_true",
        help="also serve the same artifact from bare FastAPI + uvicorn; report Serve / bare",
    )
    load.add_argument("--repeats", type=int, default=3, help="alternations with --baseline")
    load.add_argument(
        "--batching",
        choices=["on", "off"],
        help="override the config's @serve.batch switch (only when loadtest starts Serve)",
    )
    load.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _store_flag(load)

    verbs.add_parser("serve-configs", help="render the Serve configs (base + overlays)")

    run = verbs.add_parser("run", help="the main job: every model through the whole life-cycle")
    run.add_argument("--models", default="all", help="comma-separated model keys (default: all)")
    run.add_argument("--samples", type=int, default=4, help="Tune trials per model")
    run.add_argument("--num-workers", type=int, default=2)
    run.add_argument("--max-concurrent", type=int, default=2, help="trials at once")
    _store_flag(run)

    quality = verbs.add_parser(
        "quality", help="registry defaults over seeds -> reports/quality.json"
    )
    quality.add_argument("--models", default="all")
    quality.add_argument("--seeds", default="0,1,2")
    quality.add_argument("--num-workers", type=int, default=2)
    quality.add_argument("--output", default="reports/quality.json")

    study = verbs.add_parser(
        "selection-study",
        help="best-validation vs last epoch by cross-validation on rows outside the quality "
        "test splits -> reports/selection_study.json",
    )
    study.add_argument("--models", default="all")
    study.add_argument(
        "--seeds", default="0,1,2", help="quality seeds whose test rows are excluded"
    )
    study.add_argument("--folds", type=int, default=10)
    study.add_argument("--repeats", type=int, default=5)
    study.add_argument("--processes", type=int, default=2, help="fits in parallel")
    study.add_argument(
        "--first-repeat",
        type=int,
        default=0,
        help="number of the first repeat: another value gives fresh folds and initialisations, "
        "to confirm a choice on folds it was not made on",
    )
    study.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="study the defaults with this hyperparameter changed (repeatable; JSON values, "
        "e.g. --set lr=1e-3 --set hidden_sizes=[64,32])",
    )
    study.add_argument("--output", default="reports/selection_study.json")

    bench = verbs.add_parser(
        "bench", help="raylife vs plain PyTorch / bare uvicorn, interleaved -> reports/bench.*"
    )
    bench.add_argument("--quick", action="store_true", help="smoke-test sizes (CI), about 2 min")
    bench.add_argument(
        "--sections", help="comma-separated subset of train,tune,serve,lifecycle (default: all)"
    )
    bench.add_argument("--output-dir", default="reports", help="where bench.json/bench.md go")
    return parser


# ---- verbs -----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Any:
    from raylife.config import Settings

    return Settings.from_env(store=getattr(args, "store", None))


def _train_config(args: argparse.Namespace, run_name: str | None = None) -> Any:
    from raylife.config import DataConfig, TrainConfig
    from raylife.registry import get_spec

    spec = get_spec(args.model)
    hparams = spec.preset(args.preset).replace(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        hidden_sizes=args.hidden_sizes,
        conv_channels=args.conv_channels,
        dropout=args.dropout,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        activation=args.activation,
        lr_schedule=args.lr_schedule,
        epoch_selection=args.epoch_selection,
    )
    data = DataConfig(
        source=args.data,
        target=args.target,
        data_dir=args.data_dir,
        download=args.download,
        seed=args.split_seed,
    )
    return TrainConfig(
        model=args.model,
        hparams=hparams,
        data=data,
        num_workers=args.num_workers,
        use_gpu=args.use_gpu,
        cpus_per_worker=args.cpus_per_worker,
        threads_per_worker=args.threads_per_worker,
        seed=args.seed,
        run_name=run_name,
        max_failures=args.max_failures,
        report_interval_s=args.report_interval_s,
    )


def cmd_train(args: argparse.Namespace) -> None:
    from raylife.lifecycle import train_and_register
    from raylife.train import storage_path

    settings = _settings(args)
    if args.resume:
        _require_run(storage_path(settings), args.resume)
    cfg = _train_config(args, run_name=args.resume or args.run_name)
    outcome, registered = train_and_register(cfg, settings, promote=args.promote)
    print(
        f"run {outcome.run_name}: {len(outcome.history)} epochs, checkpoint of epoch "
        f"{outcome.metrics.get('epoch', 0):.0f} ({cfg.hparams.epoch_selection} epoch) {outcome.checkpoint_path}"
    )
    _print_registered(registered)


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
    from raylife.config import TuneConfig
    from raylife.lifecycle import tune_and_register

    tune_cfg = TuneConfig(
        num_samples=args.samples,
        max_concurrent_trials=args.max_concurrent,
        scheduler=args.scheduler,
        seed=args.tune_seed,
        name=args.name,
    )
    outcome, registered = tune_and_register(
        _train_config(args), tune_cfg, _settings(args), promote=args.promote
    )
    print(f"sweep {outcome.name}:")
    print(outcome.trials.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(
        f"best config: {json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in outcome.best_config.items()})}"
    )
    _print_registered(registered)


def _print_registered(registered: Any) -> None:
    art = registered.artifact
    metrics = ", ".join(
        f"{k} {v:.4f}"
        for k, v in art.metrics.items()
        if k.startswith(("val_", "test_")) and k != "val_objective"
    )
    print(f"registered {art.model} version {registered.version}: {metrics}")
    if registered.pointer:
        print(
            f"promoted {art.model} -> {registered.version} (generation {registered.pointer.generation})"
        )
    else:
        print(f"promote it with: raylife promote {art.model} {registered.version}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from raylife.evaluate import evaluate_artifact
    from raylife.store import ModelStore

    version, artifact = ModelStore(_settings(args).store_uri).load(args.model, args.version)
    metrics = evaluate_artifact(artifact)
    print(
        f"{args.model} {version} on the test split: "
        + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    )


def cmd_promote(args: argparse.Namespace) -> None:
    from raylife.registry import get_spec
    from raylife.store import ModelStore

    get_spec(args.model)
    settings = _settings(args)
    pointer = ModelStore(settings.store_uri).promote(args.model, args.version)
    print(f"promoted {args.model} -> {pointer.version} (generation {pointer.generation})")
    url = serving.notify_promotion(settings, args.model, pointer.generation)
    if url:
        serving.wait_for_version(url, args.model, pointer.version)
        print(f"the local Serve app at {url}/{args.model} now serves {pointer.version}")


def cmd_models(args: argparse.Namespace) -> None:
    from raylife.store import ModelStore

    store = ModelStore(_settings(args).store_uri)
    if args.models_verb == "show":
        version = store.resolve(args.model, args.version)
        print(json.dumps({"version": version, **store.metadata(args.model, version)}, indent=2))
        return
    if args.model:
        from raylife.registry import get_spec

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
    from raylife.predict import Predictor

    if args.url:
        print(json.dumps(_predict_url(args), indent=2))
        return
    from raylife.store import ModelStore

    predictor = Predictor.from_store(
        ModelStore(_settings(args).store_uri), args.model, args.version
    )
    answers = (
        [predictor.predict_image(args.image)]
        if args.image
        else predictor.predict_rows(_read_rows(args.input))
    )
    print(
        json.dumps(
            {"model": args.model, "version": predictor.version, "predictions": answers}, indent=2
        )
    )


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
            rows = _read_rows(args.input)
            response = httpx.post(endpoint, json={"rows": rows if _is_batch(rows) else [rows]})
    except httpx.HTTPError as exc:
        raise RaylifeError(f"cannot reach {endpoint} ({exc}); is `raylife serve` running?") from exc
    if response.status_code != 200:
        raise RaylifeError(f"{endpoint} answered {response.status_code}: {response.text[:500]}")
    return response.json()


def _is_batch(rows: Any) -> bool:
    return isinstance(rows, list) and bool(rows) and isinstance(rows[0], (list, dict))


def _read_rows(text: str) -> Any:
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


def _model_list(text: str) -> list[str]:
    from raylife.registry import MODEL_SPECS, get_spec

    if text == "all":
        return list(MODEL_SPECS)
    models = [get_spec(name.strip()).name for name in text.split(",") if name.strip()]
    if not models:
        raise RaylifeError(f"--models {text!r} names no model; pass e.g. iris,mnist or all")
    return models


def cmd_run(args: argparse.Namespace) -> None:
    from raylife.pipeline import run_all

    models = _model_list(args.models)
    run_all(
        models,
        _settings(args),
        samples=args.samples,
        num_workers=args.num_workers,
        max_concurrent=args.max_concurrent,
    )


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise RaylifeError(f"--seeds takes comma-separated integers like 0,1,2, got {text!r}")
    return seeds


def cmd_quality(args: argparse.Namespace) -> None:
    from raylife import quality

    report = quality.measure(
        _model_list(args.models),
        _seed_list(args.seeds),
        _settings(args),
        num_workers=args.num_workers,
    )
    path = quality.write_report(report, Path(args.output))
    print(quality.format_report(report))
    print(f"wrote {path}")


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """NAME=VALUE pairs; values are JSON where they parse (numbers, lists), else strings."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise RaylifeError(f"--set takes NAME=VALUE like lr=0.001, got {pair!r}")
        try:
            overrides[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name.strip()] = text
    return overrides


def cmd_selection_study(args: argparse.Namespace) -> None:
    from raylife import selection_study

    for flag, value, least in (
        ("--folds", args.folds, 2),
        ("--repeats", args.repeats, 1),
        ("--processes", args.processes, 1),
        ("--first-repeat", args.first_repeat, 0),
    ):
        if value < least:
            raise RaylifeError(f"{flag} must be >= {least}, got {value}")
    report = selection_study.run(
        _model_list(args.models),
        _seed_list(args.seeds),
        args.folds,
        args.repeats,
        args.processes,
        overrides=_overrides(args.set),
        first_repeat=args.first_repeat,
    )
    path = selection_study.write_report(report, Path(args.output))
    print(f"wrote {path}")


def cmd_serve(args: argparse.Namespace) -> None:
    import time

    settings = _settings(args)
    local = serving.start(
        settings, _model_list(args.models), port=args.port, host=args.host, num_gpus=args.num_gpus
    )
    print(f"serving {', '.join(local.models)} at {local.url} (Ctrl-C stops)")
    for model in local.models:
        print(f"  POST {local.url}/{model}   docs: {local.url}/{model}/docs")
    print(f"  GET  {local.url}/models   {local.url}/healthz   {local.url}/readyz")
    try:
        while True:
            time.sleep(3600)
    finally:
        serving.stop(settings)


def cmd_loadtest(args: argparse.Namespace) -> None:
    from raylife import loadtest
    from raylife.registry import get_spec

    get_spec(args.model)
    settings = _settings(args)
    started = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        batching = None if args.batching is None else args.batching == "on"
        started = serving.start(
            settings, [args.model], port=loadtest.free_port(), batching=batching
        )
        url = started.url
    try:
        if args.baseline:
            with loadtest.bare_server(args.model, settings.store_uri) as bare_url:
                summary = loadtest.compare(
                    url,
                    bare_url,
                    args.model,
                    args.requests,
                    args.concurrency,
                    args.repeats,
                    args.retries,
                )
            print(
                json.dumps(summary, indent=2) if args.json else loadtest.format_comparison(summary)
            )
            return
        result = loadtest.run_load(
            f"{url}/{args.model}", args.requests, args.concurrency, args.retries
        )
        print(
            json.dumps(result.to_dict(), indent=2) if args.json else loadtest.format_result(result)
        )
    finally:
        if started:
            serving.stop(settings)


def cmd_serve_configs(args: argparse.Namespace) -> None:
    from raylife import serve_config

    for path in serve_config.write_rendered():
        print(f"wrote {path}")


def cmd_bench(args: argparse.Namespace) -> None:
    from raylife.bench import runner

    sections = runner.parse_sections(args.sections, args.quick)
    home = _settings(args).home / "bench"
    _, json_path, md_path = runner.run_bench(home, Path(args.output_dir), args.quick, sections)
    print("\n" + md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


COMMANDS = {
    "train": cmd_train,
    "tune": cmd_tune,
    "evaluate": cmd_evaluate,
    "promote": cmd_promote,
    "models": cmd_models,
    "predict": cmd_predict,
    "run": cmd_run,
    "quality": cmd_quality,
    "selection-study": cmd_selection_study,
    "serve": cmd_serve,
    "loadtest": cmd_loadtest,
    "serve-configs": cmd_serve_configs,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, also in logs
    try:
        COMMANDS[args.verb](args)
    except RaylifeError as exc:
        # One line even when a message quotes a multi-line library error (YAML, pydantic).
        print(f"raylife: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("raylife: interrupted", file=sys.stderr)
        return 130
    finally:
        _shutdown_ray()
    return 0


def _shutdown_ray() -> None:
    """Stop the local cluster this command started, so the process exits without teardown noise."""
    if "ray" in sys.modules:
        from raylife.cluster import shutdown_if_started

        shutdown_if_started()


if __name__ == "__main__":
    sys.exit(main())
