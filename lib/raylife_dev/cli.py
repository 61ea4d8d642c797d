"""The developer verbs of `raylife` (registered only where raylife_dev is installed): `quality`,
`selection-study`, `recipe-study`, `bench`, `report-cost`, `gpu-check`, `loadtest`, `rehearse`,
`rehearse-ha`, `make-table`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from raylife.cli.common import add_store_flag, model_list, seed_list, settings_from
from raylife.cli.flags import add_config_flags, config_from_args, field_docs
from raylife.config import TuneConfig
from raylife.errors import RaylifeError

# The options of the verbs that measure (one frozen dataclass each, one field per flag) live here,
# not in the modules that run them: those load torch, Ray and mlflow, which `raylife --help` must
# not wait for. A field's default is the flag's default and its docstring the flag's help.


@dataclass(frozen=True)
class QualityOptions:
    """`raylife quality`: registry defaults over seeds -> a report."""

    models: str = "all"
    """Comma-separated registry keys, or all."""
    seeds: str = "0,1,2,3,4,5,6,7,8,9"
    """Comma-separated seeds; each moves both the split and the initialisation."""
    num_workers: int | None = None
    """Ray Train workers per run (default: decided per model by measurement)."""
    via: Literal["memory", "stream"] = "memory"
    """memory: the embedded datasets' in-memory path; stream: the same datasets written as files
    and trained through the Ray Data streaming path (--data)."""
    output: str = "reports/quality.json"
    """Where the report is written (JSON)."""


@dataclass(frozen=True)
class SelectionStudyOptions:
    """`raylife selection-study`: how a run should end, by cross-validation off the test rows."""

    models: str = "all"
    """Comma-separated registry keys, or all."""
    seeds: str = "0,1,2"
    """Comma-separated quality seeds whose test rows are excluded."""
    folds: int = 10
    """Folds of each cross-validation repeat."""
    repeats: int = 5
    """Cross-validation repeats (fresh folds and initialisations each)."""
    processes: int = 2
    """Fits in parallel."""
    first_repeat: int = 0
    """Number of the first repeat: another value gives fresh folds and initialisations, to
    confirm a choice on folds it was not made on."""
    overrides: tuple[str, ...] = ()
    """Study the defaults with this hyperparameter changed (repeatable; JSON values, e.g. --set
    lr=1e-3 --set hidden_sizes=[64,32])."""
    output: str = "reports/selection_study.json"
    """Where the report is written (JSON; models studied separately keep their entries)."""

    def __post_init__(self) -> None:
        for flag, value, least in (
            ("--folds", self.folds, 2),
            ("--repeats", self.repeats, 1),
            ("--processes", self.processes, 1),
            ("--first-repeat", self.first_repeat, 0),
        ):
            if value < least:
                raise RaylifeError(f"{flag} must be >= {least}, got {value}")
        # argparse's append gives a list; a frozen config holds a tuple
        object.__setattr__(self, "overrides", tuple(self.overrides))
        self.hparam_overrides()

    def hparam_overrides(self) -> dict[str, Any]:
        """NAME=VALUE pairs; values are JSON where they parse (numbers, lists), else strings."""
        overrides: dict[str, Any] = {}
        for pair in self.overrides:
            name, sep, text = pair.partition("=")
            if not sep or not name:
                raise RaylifeError(f"--set takes NAME=VALUE like lr=0.001, got {pair!r}")
            try:
                overrides[name.strip()] = json.loads(text)
            except json.JSONDecodeError:
                overrides[name.strip()] = text
        return overrides


@dataclass(frozen=True)
class RecipeStudyOptions:
    """`raylife recipe-study`: the recipe `raylife init` writes vs scikit-learn's baselines."""

    datasets: str = "wine,breast_cancer,diabetes"
    """Comma-separated embedded tables; each is declared as `raylife init` would."""
    seeds: str = "0,1,2,3,4"
    """Comma-separated seeds; each moves the split, the initialisation and the search's sampling."""
    samples: int = TuneConfig.num_samples
    """Trials of each sweep (`raylife tune`'s budget)."""
    preset: Literal["default", "debug"] = "default"
    """The declaration's preset the sweeps start from: default (the recipe) or debug (tests)."""
    output: str = "reports/recipe_study.json"
    """Where the report is written (JSON); the markdown table is printed."""

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise RaylifeError(f"--samples must be >= 1, got {self.samples}")


@dataclass(frozen=True)
class BenchOptions:
    """`raylife bench`: raylife vs plain PyTorch / bare uvicorn, interleaved."""

    quick: bool = False
    """Smoke-test sizes (CI), about 2 min."""
    sections: str | None = None
    """Comma-separated subset of
    train,trials,soak,tune,serve,oip-capture,pool,rollout,drift,batch,data,lifecycle
    (default: all; --quick: train,trials,soak,tune,serve,oip-capture)."""
    output_dir: str = "reports"
    """Where bench.json/bench.md go."""


@dataclass(frozen=True)
class ReportCostOptions:
    """`raylife report-cost`: every-epoch vs sparse reports, alternated."""

    model: str = "iris"
    """Registry key of the model whose training run is measured."""
    repeats: int = 3
    """Alternations of the two runs (each side's median fit time is reported)."""


@dataclass(frozen=True)
class GpuCheckOptions:
    """`raylife gpu-check`: MNIST trained on a GPU worker, served by a GPU replica."""

    epochs: int = 8
    """Training epochs of the MNIST run on the GPU worker."""
    gpus_per_replica: float = 0.5
    """GPUs of the Serve replica (a fraction shares the device)."""
    requests: int = 2000
    """Requests of the load test against the GPU replica."""


@dataclass(frozen=True)
class LoadtestOptions:
    """`raylife loadtest`: drive an endpoint at a concurrency; rps and latency."""

    model: str = "iris"
    """Registry key of the model to load (its route /<model>)."""
    url: str | None = None
    """Running endpoint (default: start a local Serve for the test)."""
    concurrency: int = 16
    """Requests in flight at once."""
    requests: int = 2000
    """Requests in all (per side and alternation with --baseline)."""
    retries: int = 0
    """Retries on connection errors / 500, 502, 503, 504."""
    baseline: bool = False
    """Also serve the same artifact from bare FastAPI + uvicorn; report Serve / bare."""
    repeats: int = 3
    """Alternations with --baseline."""
    batching: Literal["on", "off"] | None = None
    """Override the config's @serve.batch switch (only when loadtest starts Serve)."""
    as_json: bool = False
    """Print JSON instead of a table."""


SELECTION_STUDY_RENAME = {"overrides": "set"}
LOADTEST_RENAME = {"as_json": "json"}


def add_option_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    rename: dict[str, str] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """One flag per field of an options dataclass (but `skip`: the command adds those itself)."""
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    add_config_flags(parser, cls, fields, rename)


def register(verbs: Any) -> None:
    quality = verbs.add_parser(
        "quality", help="registry defaults over seeds -> reports/quality.json"
    )
    add_option_flags(quality, QualityOptions)
    quality.set_defaults(func=cmd_quality)

    study = verbs.add_parser(
        "selection-study",
        help="best-validation vs last epoch by cross-validation on rows outside the quality "
        "test splits -> reports/selection_study.json",
    )
    add_option_flags(study, SelectionStudyOptions, SELECTION_STUDY_RENAME, skip=("overrides",))
    study.add_argument(
        "--set",
        dest="set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=field_docs(SelectionStudyOptions)["overrides"],
    )
    study.set_defaults(func=cmd_selection_study)

    recipe = verbs.add_parser(
        "recipe-study",
        help="the recipe `raylife init` writes, tuned with the default budget, vs scikit-learn's "
        "baselines on the same splits -> reports/recipe_study.json",
    )
    add_option_flags(recipe, RecipeStudyOptions)
    recipe.set_defaults(func=cmd_recipe_study)

    bench = verbs.add_parser(
        "bench", help="raylife vs plain PyTorch / bare uvicorn, interleaved -> reports/bench.*"
    )
    add_option_flags(bench, BenchOptions)
    bench.set_defaults(func=cmd_bench)

    cost = verbs.add_parser(
        "report-cost",
        help="cost of one ray.train.report + checkpoint: every-epoch vs sparse reports, alternated",
    )
    add_option_flags(cost, ReportCostOptions)
    cost.set_defaults(func=cmd_report_cost)

    gpu = verbs.add_parser(
        "gpu-check",
        help="on a CUDA machine: MNIST trained on a GPU worker, served by a GPU replica",
    )
    add_option_flags(gpu, GpuCheckOptions)
    gpu.set_defaults(func=cmd_gpu_check)

    load = verbs.add_parser("loadtest", help="drive an endpoint at a concurrency; rps and latency")
    add_option_flags(load, LoadtestOptions, LOADTEST_RENAME)
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

    options = config_from_args(QualityOptions, args)
    report = quality.measure(
        model_list(options.models),
        seed_list(options.seeds),
        settings_from(args),
        num_workers=options.num_workers,
        via=options.via,
    )
    path = quality.write_report(report, Path(options.output))
    print(quality.format_report(report))
    print(f"wrote {path}")


def cmd_selection_study(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev import selection_study

    options = config_from_args(SelectionStudyOptions, args, SELECTION_STUDY_RENAME)
    report = selection_study.run(
        model_list(options.models),
        seed_list(options.seeds),
        options.folds,
        options.repeats,
        options.processes,
        overrides=options.hparam_overrides(),
        first_repeat=options.first_repeat,
    )
    path = selection_study.write_report(report, Path(options.output))
    print(f"wrote {path}")


def cmd_recipe_study(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev import recipe_study

    options = config_from_args(RecipeStudyOptions, args)
    report = recipe_study.run(
        recipe_study.dataset_list(options.datasets),
        seed_list(options.seeds),
        settings_from(args),
        TuneConfig(num_samples=options.samples),
        options.preset,
    )
    path = recipe_study.write_report(report, Path(options.output))
    print(recipe_study.format_table(report))
    print(f"wrote {path} ({report['wall_s'] / 60:.1f} min)")


def cmd_bench(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev.bench import runner

    options = config_from_args(BenchOptions, args)
    sections = runner.parse_sections(options.sections, options.quick)
    home = settings_from(args).home / "bench"
    _, json_path, md_path = runner.run_bench(
        home, Path(options.output_dir), options.quick, sections
    )
    print("\n" + md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


def cmd_report_cost(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife_dev.report_cost import report_cost

    options = config_from_args(ReportCostOptions, args)
    get_spec(options.model)
    print(json.dumps(report_cost(options.model, settings_from(args), options.repeats), indent=2))


def cmd_gpu_check(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev import gpu_check

    options = config_from_args(GpuCheckOptions, args)
    report = gpu_check.run(options.epochs, options.gpus_per_replica, options.requests)
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
    from raylife.catalog.lookup import get_spec
    from raylife.cluster import free_port
    from raylife.serve import local
    from raylife_dev import loadtest

    options = config_from_args(LoadtestOptions, args, LOADTEST_RENAME)
    get_spec(options.model)
    settings = settings_from(args)
    started = None
    if options.url:
        url = options.url.rstrip("/")
    else:
        batching = None if options.batching is None else options.batching == "on"
        started = local.start(
            settings, [options.model], port=free_port(), batching=batching, own_ports=True
        )
        url = started.url
    try:
        if options.baseline:
            with loadtest.bare_server(options.model, settings.store_uri) as bare_url:
                summary = loadtest.compare(
                    url,
                    bare_url,
                    options.model,
                    options.requests,
                    options.concurrency,
                    options.repeats,
                    options.retries,
                )
            print(
                json.dumps(summary, indent=2)
                if options.as_json
                else loadtest.format_comparison(summary)
            )
            return
        result = loadtest.run_load(
            f"{url}/{options.model}", options.requests, options.concurrency, options.retries
        )
        print(
            json.dumps(result.to_dict(), indent=2)
            if options.as_json
            else loadtest.format_result(result)
        )
    finally:
        if started:
            local.stop(settings)
