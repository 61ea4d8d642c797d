"""The developer verbs of `raylife` (registered only where raylife_dev is installed): `quality`,
`selection-study`, `bench`, `report-cost`, `gpu-check`, `loadtest`, `rehearse`, `rehearse-ha`,
`make-table`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from raylife.cli.common import add_store_flag, model_list, seed_list, settings_from
from raylife.errors import RaylifeError


def register(verbs: Any) -> None:
    quality = verbs.add_parser(
        "quality", help="registry defaults over seeds -> reports/quality.json"
    )
    quality.add_argument("--models", default="all")
    quality.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    quality.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="Ray Train workers per run (default: decided per model by measurement)",
    )
    quality.add_argument(
        "--via",
        choices=("memory", "stream"),
        default="memory",
        help="memory: the embedded datasets' in-memory path (default); stream: the same "
        "datasets written as files and trained through the Ray Data streaming path (--data)",
    )
    quality.add_argument("--output", default="reports/quality.json")
    quality.set_defaults(func=cmd_quality)

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
    study.set_defaults(func=cmd_selection_study)

    bench = verbs.add_parser(
        "bench", help="raylife vs plain PyTorch / bare uvicorn, interleaved -> reports/bench.*"
    )
    bench.add_argument("--quick", action="store_true", help="smoke-test sizes (CI), about 2 min")
    bench.add_argument(
        "--sections",
        help="comma-separated subset of train,trials,soak,tune,serve,oip-capture,rollout,batch,"
        "data,lifecycle (default: all; --quick: train,trials,soak,tune,serve,oip-capture)",
    )
    bench.add_argument("--output-dir", default="reports", help="where bench.json/bench.md go")
    bench.set_defaults(func=cmd_bench)

    cost = verbs.add_parser(
        "report-cost",
        help="cost of one ray.train.report + checkpoint: every-epoch vs sparse reports, alternated",
    )
    cost.add_argument("--model", default="iris")
    cost.add_argument("--repeats", type=int, default=3)
    cost.set_defaults(func=cmd_report_cost)

    gpu = verbs.add_parser(
        "gpu-check",
        help="on a CUDA machine: MNIST trained on a GPU worker, served by a GPU replica",
    )
    gpu.add_argument("--epochs", type=int, default=8)
    gpu.add_argument("--gpus-per-replica", type=float, default=0.5)
    gpu.add_argument("--requests", type=int, default=2000)
    gpu.set_defaults(func=cmd_gpu_check)

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
    add_store_flag(load)
    load.set_defaults(func=cmd_loadtest)

    rehearse = verbs.add_parser(
        "rehearse", help="run kuberay/'s CPU RayJobs and the local Serve config on 2 local nodes"
    )
    rehearse.add_argument(
        "--jobs",
        type=lambda text: [name for name in text.split(",") if name],
        default=None,
        help="comma-separated RayJob names (default: every CPU job), e.g. "
        "rayjob-train-iris,rayjob-tune-mnist",
    )
    rehearse.set_defaults(func=cmd_rehearse)

    ha = verbs.add_parser(
        "rehearse-ha",
        help="kill the head's GCS, then the head, under load on a 2-node cluster (root: netns)",
    )
    ha.add_argument("--replicas", type=int, default=2, help="iris replicas on the worker node")
    ha.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_store_flag(ha)
    ha.set_defaults(func=cmd_rehearse_ha)

    table = verbs.add_parser(
        "make-table", help="a seeded synthetic table of any size, as Parquet parts in a new folder"
    )
    table.add_argument("path", help="new folder for the Parquet parts")
    table.add_argument("--rows", type=int, required=True)
    table.add_argument("--features", type=int, default=16)
    table.add_argument("--task", default="multiclass", help="multiclass, binary or regression")
    table.add_argument("--classes", type=int, default=3, help="classes of a multiclass table")
    table.add_argument("--seed", type=int, default=0)
    table.add_argument("--rows-per-part", type=int, default=100_000)
    table.set_defaults(func=cmd_make_table)


def cmd_quality(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev import quality

    report = quality.measure(
        model_list(args.models),
        seed_list(args.seeds),
        settings_from(args),
        num_workers=args.num_workers,
        via=args.via,
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
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev import selection_study

    for flag, value, least in (
        ("--folds", args.folds, 2),
        ("--repeats", args.repeats, 1),
        ("--processes", args.processes, 1),
        ("--first-repeat", args.first_repeat, 0),
    ):
        if value < least:
            raise RaylifeError(f"{flag} must be >= {least}, got {value}")
    report = selection_study.run(
        model_list(args.models),
        seed_list(args.seeds),
        args.folds,
        args.repeats,
        args.processes,
        overrides=_overrides(args.set),
        first_repeat=args.first_repeat,
    )
    path = selection_study.write_report(report, Path(args.output))
    print(f"wrote {path}")


def cmd_bench(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev.bench import runner

    sections = runner.parse_sections(args.sections, args.quick)
    home = settings_from(args).home / "bench"
    _, json_path, md_path = runner.run_bench(home, Path(args.output_dir), args.quick, sections)
    print("\n" + md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


def cmd_report_cost(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.specs import get_spec
    from raylife_dev.report_cost import report_cost

    get_spec(args.model)
    print(json.dumps(report_cost(args.model, settings_from(args), args.repeats), indent=2))


def cmd_gpu_check(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev import gpu_check

    report = gpu_check.run(args.epochs, args.gpus_per_replica, args.requests)
    print("GPU_CHECK " + json.dumps(report))


def cmd_rehearse_ha(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import tempfile

    from raylife_dev.ha_rehearsal import rehearse_ha

    if args.replicas < 1:
        raise RaylifeError(f"--replicas must be >= 1, got {args.replicas}")
    print("Rehearsing the RayService's HA on a local 2-node cluster (GCS state in RocksDB) ...")
    with tempfile.TemporaryDirectory(prefix="rl-ha-") as work:
        report = rehearse_ha(settings_from(args).store_uri, Path(work), replicas=args.replicas)
    print(json.dumps(report, indent=2) if args.json else _ha_summary(report))


def _ha_summary(report: dict[str, Any]) -> str:
    return (
        f"outage {report['outage_s']} s; {report['requests']} requests, {report['lost']} lost; "
        f"first try {report['during_outage_first_try_share']:.2%} during the outage "
        f"({report['during_outage_requests']} requests); app {report['app_status_after']}, "
        f"same replicas: {report['same_replicas']}; promotion after recovery served: "
        f"{report['promotion_after_recovery']['served']}"
    )


def cmd_rehearse(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev import rehearsal

    rehearsal.main(args.jobs)


def cmd_make_table(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev.synth_table import make_table

    info = make_table(
        args.path,
        rows=args.rows,
        features=args.features,
        task=args.task,
        seed=args.seed,
        rows_per_part=args.rows_per_part,
        classes=args.classes,
    )
    print(
        f"{info.path}: {info.rows:,} rows x {info.features} features ({info.task}), "
        f"{info.parts} Parquet part(s), {info.bytes_on_disk / 2**20:,.1f} MiB on disk, "
        f"{info.bytes_in_memory / 2**20:,.1f} MiB as a float64 table in memory"
    )


def cmd_loadtest(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.specs import get_spec
    from raylife.cluster import free_port
    from raylife.serve import local
    from raylife_dev import loadtest

    get_spec(args.model)
    settings = settings_from(args)
    started = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        batching = None if args.batching is None else args.batching == "on"
        started = local.start(
            settings, [args.model], port=free_port(), batching=batching, own_ports=True
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
            local.stop(settings)
