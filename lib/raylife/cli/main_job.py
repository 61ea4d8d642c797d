"""The main job (`make run`): every model through the whole life-cycle, then a report.

prepare data -> Tune sweep (ASHA) whose trials are sized by raylife.training.sizing (one process each for
the tutorial's models on a small machine, DDP where it pays) -> best checkpoint registered and
promoted -> test-split evaluation -> predictions from the promoted version -> plots and a table of
test metrics next to the tutorial's figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raylife.catalog.lookup import get_spec
from raylife.cluster import ensure_ray, free_port, link_ray_logs
from raylife.config import TrainConfig, TuneConfig
from raylife.data.prepare import prepare
from raylife.inference.predict import Predictor
from raylife.lifecycle import plots
from raylife.lifecycle.store import ModelStore
from raylife.lifecycle.train_and_store import tune_and_register
from raylife.serve import local as serving
from raylife.settings import Settings
from raylife.tracking import runs as tracking
from raylife.training.tune import required_cpus


@dataclass
class ModelReport:
    model: str
    metric: str
    version: str
    val: float
    test: float
    tutorial_reported: float | None
    """None for a model the tutorial does not have (every user model)."""
    tutorial_same_data: float | None
    trials: int
    seconds: float
    promoted: bool
    """False when the promotion gate kept the previous champion (predictions are the champion's)."""
    sample_predictions: list[dict[str, Any]] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    @property
    def beats_tutorial(self) -> bool | None:
        """Against the tutorial's code on the same embedded data (the like-for-like figure)."""
        if self.tutorial_same_data is None:
            return None
        return get_spec(self.model).task_obj.meets(self.test, self.tutorial_same_data)


def run_all(
    models: list[str],
    settings: Settings,
    samples: int,
    num_workers: int | None = None,
    say: Callable[[str], None] = print,
    serve: bool = True,
    max_concurrent: int | None = None,
    preset: str = "default",
) -> list[ModelReport]:
    """preset: the hyperparameters each sweep starts from ("debug": tiny, for tests).
    num_workers: Ray Train workers per trial; None: raylife.training.sizing decides per model.
    max_concurrent: trials at once; None: as many as the CPUs hold."""
    reports, test_rows = [], {}
    tune_cfg = TuneConfig(
        num_samples=samples, max_concurrent_trials=max_concurrent, workers_per_trial=num_workers
    )
    if settings.mlflow_uri is not None:  # opened while the cluster starts (mostly waiting)
        tracking.open_in_background(settings.mlflow_uri)
    if serve:  # the cluster the sweeps start will serve too: give it Serve's environment now
        ensure_ray(
            num_cpus=max(
                required_cpus(
                    _base_config(m, preset).replace(num_workers=num_workers or 1), tune_cfg
                )
                for m in models
            ),
            cluster_env=serving.serving_cluster_env(own_ports=True),
        )
    for index, model in enumerate(models, start=1):
        say(f"\n[{index}/{len(models)}] {model}: {get_spec(model).description}")
        base = _base_config(model, preset)
        report, test_rows[model] = run_model(base, settings, tune_cfg, say)
        reports.append(report)
    say("\n" + format_table(reports))
    summary = settings.home / "run-summary.json"
    summary.write_text(json.dumps([asdict(r) for r in reports], indent=2, default=str))
    say(
        f"\nOutputs: store {settings.store_uri} | plots {settings.plots_dir} | runs {settings.runs_uri} | summary {summary}"
    )
    logs = link_ray_logs(settings.home)
    if logs is not None:
        say(f"Ray's logs (every trial's and replica's output): {logs}")
    if serve:
        serve_and_query(test_rows, settings, say)
    return reports


def serve_and_query(
    test_rows: dict[str, tuple[Any, Any]], settings: Settings, say: Callable[[str], None]
) -> None:
    """Serve the promoted versions over HTTP, ask each model about its held-out test row, stop."""
    say("\nServing the promoted models with Ray Serve ...")
    local = serving.start(settings, list(test_rows), port=free_port())
    try:
        for model in local.models:
            answer = serving.query_test_row(local.url, model, *test_rows[model])
            say(f"  {answer}")
    finally:
        serving.stop(settings)
    say("Serve stopped. `make serve` keeps it running: POST http://127.0.0.1:8000/<model>")


def run_model(
    base: TrainConfig,
    settings: Settings,
    tune_cfg: TuneConfig,
    say: Callable[[str], None],
) -> tuple[ModelReport, tuple[Any, Any]]:
    """The model's report, and its first held-out test row (raw inputs, truth) for serving."""
    started = time.monotonic()
    model = base.model
    spec = get_spec(model)
    data = prepare(spec, base.data)
    say(f"  data: {data.provenance['origin']} -> train/val/test {data.provenance['rows']}")
    say(
        f"  sweep: {tune_cfg.num_samples} trials, ASHA on validation {spec.task_obj.metric}, "
        f"up to {base.hparams.epochs} epochs"
    )
    sweep, registered = tune_and_register(base, tune_cfg, settings, promote=True, data=data)
    metric = spec.task_obj.metric
    say(sweep.trials.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    metrics = registered.artifact.metrics
    say(
        f"  best trial registered as {model} version {registered.version}: "
        f"val {metric} {metrics[f'val_{metric}']:.4f}, test {metric} {metrics[f'test_{metric}']:.4f}"
    )
    say(f"  {registered.promotion_line}")
    predictor = Predictor.from_store(ModelStore(settings.store_uri), model)
    samples_out = _sample_predictions(predictor, data)
    for line in samples_out[:3]:
        say(f"  predict {line['input']} -> {line['prediction']} (true {line['truth']})")
    figure_paths = _plots(model, sweep, metric, predictor, data, settings)
    report = ModelReport(
        model=model,
        metric=metric,
        version=registered.version,
        val=registered.artifact.metrics[f"val_{metric}"],
        test=registered.artifact.metrics[f"test_{metric}"],
        tutorial_reported=spec.tutorial.reported if spec.tutorial else None,
        tutorial_same_data=spec.tutorial.same_data if spec.tutorial else None,
        trials=len(sweep.trials),
        promoted=registered.pointer is not None
        and registered.pointer.version == registered.version,
        seconds=round(time.monotonic() - started, 1),
        sample_predictions=samples_out,
        plots=[str(p) for p in figure_paths],
    )
    return report, (data.test_raw.X[0], data.test_raw.y[0])


def _base_config(model: str, preset: str) -> TrainConfig:
    """A sweep's base run: the preset's hyperparameters (each trial overrides what Tune samples;
    the sweep sets the workers per trial)."""
    return TrainConfig(model=model, hparams=get_spec(model).preset(preset))


def _sample_predictions(predictor: Predictor, data: Any, n: int = 3) -> list[dict[str, Any]]:
    raw = data.test_raw
    answers = predictor.predict_array(raw.X[:n])
    out = []
    for x, y, answer in zip(raw.X[:n], raw.y[:n], answers, strict=True):
        truth = (
            float(y)
            if not predictor.task.is_classification
            else (predictor.artifact.label_names or [])[int(y)]
        )
        shown = (
            "28x28 image"
            if predictor.artifact.schema.is_image
            else "[" + ", ".join(f"{v:.3g}" for v in x[:4]) + (", ...]" if len(x) > 4 else "]")
        )
        prediction = (
            f"{answer['value']:.2f}"
            if "value" in answer
            else f"{answer['label']} (p={max(answer['probabilities'].values()):.2f})"
        )
        out.append({"input": shown, "prediction": prediction, "truth": truth})
    return out


def _plots(
    model: str, sweep: Any, metric: str, predictor: Predictor, data: Any, settings: Settings
) -> list[Path]:
    folder = settings.plots_dir
    best_trial = _best_trial(sweep)
    # The whole promoted trial (every epoch), not just the history up to its best checkpoint.
    full_history = sweep.histories[best_trial].to_dict(orient="records")
    chosen = int(sweep.best_metrics["epoch"])
    paths = [
        plots.learning_curves(
            model, full_history, metric, folder / f"{model}-learning-curves.png", chosen
        ),
        plots.tune_trials(
            model, sweep.histories, f"val_{metric}", best_trial, folder / f"{model}-tune-trials.png"
        ),
    ]
    if predictor.artifact.schema.is_image:
        images, truth = data.test_raw.X[:32], data.test_raw.y[:32]
        answers = predictor.predict_array(images)
        labels = predictor.artifact.label_names or []
        true_labels = [labels[int(t)] for t in truth]
        predicted = [a["label"] for a in answers]
        paths.append(
            plots.mnist_grid(images, true_labels, predicted, folder / f"{model}-predictions.png")
        )
    return paths


def _best_trial(sweep: Any) -> str:
    return str(sweep.best_metrics["trial_id"])


def format_table(reports: list[ModelReport]) -> str:
    header = (
        f"{'model':<11} {'metric':<9} {'test':>7} {'val':>7} {'tutorial':>9} {'tut. code':>10}"
        f"  {'vs tut. code':<12} {'trials':>6} {'time':>6}  version"
    )
    lines = [
        "Test-split results of the promoted models. 'tutorial' = the figure the tutorial reports (its own",
        "single split; MNIST on full 60k MNIST); 'tut. code' = the tutorial's code on this same embedded",
        "data, 5-seed mean (shared TUTORIAL_REFERENCE). One test split per model here: see `make quality`",
        "for seed means.",
        header,
        "-" * len(header),
    ]
    for r in reports:
        verdict = {True: "better", False: "worse", None: "-"}[r.beats_tutorial]
        lines.append(
            f"{r.model:<11} {r.metric:<9} {r.test:>7.4f} {r.val:>7.4f} {_shown(r.tutorial_reported):>9} "
            f"{_shown(r.tutorial_same_data):>10}  {verdict:<12} {r.trials:>6} {r.seconds:>5.0f}s  {r.version}"
        )
    return "\n".join(lines)


def _shown(figure: float | None) -> str:
    return "-" if figure is None else f"{figure:.3f}"
