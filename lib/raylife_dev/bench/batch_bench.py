"""Batch section: `raylife batch-predict` (Ray Data, actor pool) vs a plain loop calling the same
Predictor over pyarrow batches, on one generated Parquet table; and 1 vs 2 actors.

Both sides do the same work per row: read the feature columns, `Predictor.predict_batch`, build the
same output rows (`raylife.inference.batch_predict.answer_table`) and write them as Parquet. The plain loop
is one process with torch's default threads, already warm (torch imported, in the bench's own
process); batch-predict's time is the whole call (planning, actor start and model load, scoring,
publishing), so its fixed costs count against it.

The whole call is a fixed cost (two new processes importing torch: seconds on 2 cores) plus a rate,
so one table size cannot tell them apart. The section also reports the scoring window (first chunk
started to last chunk ended, on the actors), the fixed cost, the table size from which the whole
call beats the plain loop (fixed cost / (1/plain rate - 1/scoring rate)), and one alternated round
on a table `scale_factor` times larger to check that prediction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from raylife.settings import Settings
from raylife_dev.bench.stats import Section, alternate

MODEL = "ionosphere"
"""33 features, the deepest tabular MLP of the registry: the heaviest rows to score."""


@dataclass(frozen=True)
class BatchBenchSetup:
    rows: int
    parts: int
    repeats: int
    batch_size: int
    scale_factor: int
    """The larger table's rows / rows (0: no larger table)."""


def setup_for(quick: bool) -> BatchBenchSetup:
    if quick:
        return BatchBenchSetup(rows=20_000, parts=2, repeats=1, batch_size=4096, scale_factor=0)
    return BatchBenchSetup(rows=1_000_000, parts=8, repeats=3, batch_size=4096, scale_factor=10)


def bench_artifact(settings: Settings) -> tuple[str, list[str]]:
    """An untrained ionosphere version, promoted in the bench store: the cost of scoring does not
    depend on the weights. Returns (store uri, feature names)."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife.config import TrainConfig
    from raylife.data.prepare import prepare
    from raylife.lifecycle.store import ModelStore
    from raylife.training.train import fresh_model, make_artifact

    spec = get_spec(MODEL)
    cfg = TrainConfig(model=MODEL, hparams=spec.defaults)
    data = prepare(spec, cfg.data)
    with fresh_model(cfg, data) as (module, _):
        artifact = make_artifact(cfg, data, module, history=[], metrics={}, run_name="bench")
    store = ModelStore(settings.store_uri)
    store.promote(MODEL, store.register(artifact))
    return settings.store_uri, list(data.schema.feature_names)


def write_table(folder: Path, setup: BatchBenchSetup, names: list[str]) -> None:
    """Seeded normal features as Parquet parts (row groups of 65,536 rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, rows in enumerate(np.array_split(np.arange(setup.rows), setup.parts)):
        X = rng.normal(size=(len(rows), len(names)))
        table = pa.table({"id": rows, **{n: X[:, j] for j, n in enumerate(names)}})
        pq.write_table(table, folder / f"part-{part:03d}.parquet", row_group_size=65_536)


def plain_loop(store_uri: str, source: Path, out: Path, batch_size: int) -> dict[str, float]:
    """The baseline: one process, the same Predictor, pyarrow batches in, Parquet out."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import pyarrow.parquet as pq

    from raylife.inference.batch_predict import answer_table, features_of
    from raylife.inference.predict import Predictor
    from raylife.lifecycle.store import ModelStore

    started = time.perf_counter()
    predictor = Predictor.from_store(ModelStore(store_uri), MODEL)
    names = predictor.artifact.schema.feature_names
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for path in sorted(source.glob("*.parquet")):
        with pq.ParquetWriter(out / path.name, _schema(predictor)) as writer:
            for batch in pq.ParquetFile(path).iter_batches(batch_size, columns=["id", *names]):
                answers = predictor.predict_batch(features_of(batch, names))
                ids = batch.column("id")
                writer.write_table(
                    answer_table(ids, "id", answers, predictor.label_names, predictor.version)
                )
                rows += len(batch)
    seconds = time.perf_counter() - started
    return {"rows_per_s": rows / seconds, "seconds": seconds}


def _schema(predictor: object) -> object:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import pyarrow as pa

    from raylife.inference.batch_predict import answer_table
    from raylife.inference.predict import Predictions

    labels = predictor.label_names  # type: ignore[attr-defined]
    empty = Predictions(
        labels=np.zeros(0, dtype=np.int64), probabilities=np.zeros((0, len(labels)))
    )
    return answer_table(pa.array([], pa.int64()), "id", empty, labels, "").schema


def ray_run(
    store_uri: str, source: Path, out: Path, actors: int, batch_size: int
) -> dict[str, float]:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.inference.batch_predict import BatchConfig, batch_predict

    cfg = BatchConfig(
        model=MODEL,
        input=str(source),
        output=str(out),
        store_uri=store_uri,
        actors=actors,
        batch_size=batch_size,
        overwrite=True,
    )
    done = batch_predict(cfg)
    return {
        "rows_per_s": done.rows_per_s,
        "seconds": done.seconds,
        "scoring_rows_per_s": done.scoring_rows_per_s,
        "fixed_seconds": done.seconds - done.scoring_seconds,
    }


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    import torch

    setup = setup_for(quick)
    work = Path(settings.home) / "bench-batch"
    store_uri, names = bench_artifact(settings)
    write_table(work / "input", setup, names)
    section = Section(
        "batch",
        {**asdict(setup), "model": MODEL, "plain torch threads": torch.get_num_threads()},
    )
    started = time.monotonic()
    say(f"  batch: plain loop vs batch-predict (1 and 2 actors), {setup.rows:,} rows")
    contenders = _contenders(store_uri, work, "input", setup.batch_size, actors=(1, 2))
    measured = alternate(contenders, setup.repeats, say)
    for contender, values in measured.items():
        for key, series in values.items():
            section.add(f"{contender} {key}", series, "rows/s" if "rows_per_s" in key else "s")
    section.check(
        "batch-predict (2 actors) / plain loop, rows/s",
        section.ratio("ray 2 actors rows_per_s", "plain rows_per_s"),
        ">=",
        1.0,
    )
    section.check(
        "2 actors / 1 actor, rows/s",
        section.ratio("ray 2 actors rows_per_s", "ray 1 actor rows_per_s"),
        ">=",
        1.3,
        "scaling on 2 cores",
    )
    section.check(
        "2 actors / 1 actor, scoring window rows/s",
        section.ratio("ray 2 actors scoring_rows_per_s", "ray 1 actor scoring_rows_per_s"),
        ">=",
        1.3,
        "scaling once the actors are up",
    )
    _fixed_and_rate(section)
    if setup.scale_factor:
        _at_scale(section, setup, store_uri, names, work, say)
    section.seconds = time.monotonic() - started
    return section


def _contenders(
    store_uri: str, work: Path, table: str, batch_size: int, actors: tuple[int, ...]
) -> dict[str, Callable[[int], dict[str, float]]]:
    """The plain loop and batch-predict with each pool size, on the table work/<table>."""
    source = work / table
    contenders: dict[str, Callable[[int], dict[str, float]]] = {
        "plain": lambda _: plain_loop(store_uri, source, work / "plain", batch_size)
    }
    for n in actors:
        contenders[f"ray {n} actor{'s' if n > 1 else ''}"] = partial(
            _ray_round, store_uri, source, work / "ray", n, batch_size
        )
    return contenders


def _ray_round(
    store_uri: str, source: Path, out: Path, actors: int, batch_size: int, _round: int
) -> dict[str, float]:
    return ray_run(store_uri, source, out, actors, batch_size)


def _fixed_and_rate(section: Section) -> None:
    """The whole call split into its fixed cost and its scoring rate, and where it breaks even."""
    plain = section.figures["plain rows_per_s"].median
    scoring = section.figures["ray 2 actors scoring_rows_per_s"].median
    fixed = section.figures["ray 2 actors fixed_seconds"].median
    section.check(
        "batch-predict (2 actors) scoring window / plain loop, rows/s",
        scoring / plain,
        ">=",
        1.0,
        "the rate once the actors are up; the fixed cost is reported beside it",
    )
    if scoring > plain:
        section.add("break-even rows (2 actors)", [fixed / (1 / plain - 1 / scoring)], "rows")


def _at_scale(
    section: Section,
    setup: BatchBenchSetup,
    store_uri: str,
    names: list[str],
    work: Path,
    say: Callable[[str], None],
) -> None:
    """One alternated round on a table scale_factor times larger: the break-even, tested."""
    large = BatchBenchSetup(
        rows=setup.rows * setup.scale_factor,
        parts=setup.parts * setup.scale_factor,
        repeats=1,
        batch_size=setup.batch_size,
        scale_factor=0,
    )
    write_table(work / "input-large", large, names)
    say(f"  batch: plain loop vs batch-predict (2 actors), {large.rows:,} rows")
    measured = alternate(
        _contenders(store_uri, work, "input-large", large.batch_size, actors=(2,)), 1, say
    )
    rows = f"{large.rows // 1_000_000}M"
    for contender, values in measured.items():
        section.add(f"{rows} rows: {contender} rows_per_s", values["rows_per_s"], "rows/s")
    section.check(
        f"batch-predict (2 actors) / plain loop at {rows} rows, rows/s",
        section.ratio(f"{rows} rows: ray 2 actors rows_per_s", f"{rows} rows: plain rows_per_s"),
        ">=",
        1.0,
        "one round: above the break-even the actors' rate pays for their start",
    )
