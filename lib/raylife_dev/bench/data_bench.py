"""Data section: streaming through Ray Data, in its own process and cluster.

Bounded memory: `raylife train` streams 2 epochs of a `make-table` table at least 3x the capped
object store; psutil samples the RSS of the driver and every Ray worker process meanwhile, and
each peak must stay under PEAK_RSS_BOUND. The in-memory path would need the whole table as a
float64 matrix in the driver: that size is computed, not tried.

Throughput: rows per second into the same MLP, one training process each: Ray Data streaming
(raylife.data.streaming's batches, as a Train worker iterates them, READ_TASKS read tasks) vs a plain
torch DataLoader over the same Parquet parts read with pyarrow (the same number of reader
processes, the same batch size, the same preprocessing), interleaved. Neither shuffles, as the
DataLoader over an IterableDataset cannot; Ray Data with the local shuffle buffer a training run
uses is measured beside them ("ray data shuffled"), for what that buffer costs.

The section runs in a child process (`python -m raylife_dev.bench.data_bench`) because its
cluster's object store is capped: the runner starts it after its own cluster is down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from raylife.catalog.architectures import build_model
from raylife.catalog.lookup import get_spec
from raylife.data.streaming import READ_TASKS, Plan, collate
from raylife.errors import RaylifeError
from raylife.tasks import Task
from raylife.training.loop import train_epoch
from raylife_dev.bench.stats import Section

PEAK_RSS_BOUND = int(1.5 * 2**30)
"""Per process, driver and each Ray worker alike, whatever the table's size."""
FEATURES = 32


@dataclass(frozen=True)
class DataBenchSetup:
    table_bytes: int
    """Arrow size of the bounded-memory table (float32 features, int64 id and target)."""
    object_store_bytes: int
    throughput_rows: int
    batch_size: int
    repeats: int


def setup_for(quick: bool) -> DataBenchSetup:
    if quick:
        return DataBenchSetup(300 * 2**20, 100 * 2**20, 200_000, 256, 1)
    return DataBenchSetup(4 * 2**30, 2**30, 1_000_000, 256, 2)


def run(home: Path, quick: bool, say: Callable[[str], None] = print) -> Section:
    """The section, measured by a child process with its own capped cluster."""
    setup = setup_for(quick)
    section = Section("data", asdict(setup) | {"peak_rss_bound": PEAK_RSS_BOUND})
    folder = home / f"data-bench-{int(time.time())}"
    folder.mkdir(parents=True)
    log, result = folder / "child.log", folder / "result.json"
    say(
        f"  data: own cluster, object store {setup.object_store_bytes / 2**20:.0f} MiB (log: {log})"
    )
    started = time.monotonic()
    with log.open("w") as out:
        command = [sys.executable, "-m", "raylife_dev.bench.data_bench", str(folder)]
        code = subprocess.run(
            command + (["--quick"] if quick else []),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAYLIFE_HOME": str(folder / "home")},
            check=False,
        ).returncode
    if code != 0 or not result.exists():
        raise RaylifeError(f"the data bench failed (exit {code}); see {log}")
    _fill(section, json.loads(result.read_text()), setup)
    section.seconds = time.monotonic() - started
    return section


def _fill(section: Section, found: dict[str, Any], setup: DataBenchSetup) -> None:
    section.extra.update(found)
    mib = 2**20
    section.add("table arrow MiB", [found["table_bytes"] / mib], "MiB")
    section.add("in-memory path needs MiB", [found["in_memory_bytes"] / mib], "MiB")
    section.add("driver peak RSS MiB", [found["driver_peak"] / mib], "MiB")
    section.add("worker peak RSS MiB", [found["worker_peak"] / mib], "MiB")
    section.add("ray data rows/s", found["ray_rows_s"], "rows/s")
    section.add("dataloader rows/s", found["plain_rows_s"], "rows/s")
    section.add("ray data shuffled rows/s", found["ray_shuffled_rows_s"], "rows/s")
    section.check(
        "table / object store", found["table_bytes"] / setup.object_store_bytes, ">=", 3.0
    )
    worst = max(found["driver_peak"], found["worker_peak"]) / mib
    section.check("peak RSS of any process (MiB)", worst, "<=", PEAK_RSS_BOUND / mib)
    ratio = section.ratio("ray data rows/s", "dataloader rows/s")
    section.check("Ray Data / DataLoader rows/s", ratio, ">=", 0.8, "2 shared cores: noisy")


# --------------------------------------------------------------------------------------------------
# The child process


class RssSampler:
    """Peak RSS per process of this driver and every Ray worker process, sampled every 0.2 s."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path: no new dependency)

        # isort: split
        import psutil

        driver = psutil.Process()
        while not self._stop.wait(0.2):
            self._sample("driver", driver, psutil)
            # The cluster this process started: its raylet's workers descend from the driver.
            for proc in driver.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    # Ray names its worker processes by what they run: "ray::RayTrainWorker ..."
                    title = (proc.cmdline() or [""])[0].split(" ")[0]
                    if title.startswith("ray::"):
                        self._sample(f"{title}#{proc.pid}", proc, psutil)

    def _sample(self, key: str, proc: Any, psutil: Any) -> None:
        with contextlib.suppress(psutil.Error):
            self.peaks[key] = max(self.peaks.get(key, 0), proc.memory_info().rss)


def child(folder: Path, quick: bool) -> dict[str, Any]:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.cluster import ensure_ray
    from raylife_dev.synth_table import make_table

    setup = setup_for(quick)
    row_bytes = FEATURES * 4 + 16
    rows = setup.table_bytes // row_bytes + 1
    table = make_table(str(folder / "table"), rows, FEATURES, seed=0, rows_per_part=200_000)
    ensure_ray(num_cpus=3, object_store_memory=setup.object_store_bytes)
    with RssSampler() as sampler:
        _train(table.path)
    workers = {k: v for k, v in sampler.peaks.items() if k != "driver"}
    if not any(k.startswith("ray::RayTrainWorker") for k in workers):  # no vacuous bound
        raise RaylifeError("the RSS sampler saw no Ray Train worker; check RssSampler")
    small = make_table(
        str(folder / "throughput"), setup.throughput_rows, FEATURES, seed=1, rows_per_part=100_000
    )
    rates = _throughput(small.path, setup)
    return {
        "table_rows": rows,
        "table_bytes": rows * row_bytes,
        "table_on_disk": table.bytes_on_disk,
        "in_memory_bytes": table.bytes_in_memory,
        "driver_peak": sampler.peaks.get("driver", 0),
        "worker_peak": max(workers.values(), default=0),
        "worker_peaks": _by_role(workers),
        "ray_rows_s": rates["ray"],
        "plain_rows_s": rates["plain"],
        "ray_shuffled_rows_s": rates["ray shuffled"],
    }


def _by_role(peaks: dict[str, int]) -> dict[str, int]:
    """The highest peak of each kind of Ray process (the part of its title before '#' and '.')."""
    roles: dict[str, int] = {}
    for key, rss in peaks.items():
        role = key.split("#")[0].split(".")[0]
        roles[role] = max(roles.get(role, 0), rss)
    return roles


def _train(path: str) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife.config import DataConfig, TrainConfig
    from raylife.settings import Settings
    from raylife.training.train import run_training

    cfg = TrainConfig(
        model="iris",
        hparams=get_spec("iris").debug.replace(epochs=2, batch_size=1024),
        data=DataConfig(source=path, target="target"),
        num_workers=2,
    )
    run_training(cfg, Settings.from_env())


def _throughput(path: str, setup: DataBenchSetup) -> dict[str, list[float]]:
    """rows/s of one training pass: Ray Data, the DataLoader and Ray Data with the training
    run's local shuffle, alternated (after one warm-up each)."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife.config import DataConfig
    from raylife.data.prepare import prepare

    spec = get_spec("iris")
    data = prepare(spec, DataConfig(source=path, target="target"))
    assert data.stream is not None
    train, cpu = data.stream.datasets["train"], torch.device("cpu")
    contenders = {
        "ray": data.stream.batches(train, setup.batch_size, spec.task_obj, cpu, 0, False),
        "plain": _plain_loader(path, data.stream.plan, setup.batch_size, spec.task_obj),
        "ray shuffled": data.stream.batches(train, setup.batch_size, spec.task_obj, cpu, 0, True),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(setup.repeats + 1):
        for name, batches in contenders.items():
            rate = _train_pass(batches, data)
            if repeat:  # the first pass of each warms up processes and caches
                rates[name].append(rate)
    return rates


def _train_pass(batches: Any, data: Any) -> float:
    """Rows per second of one pass of SGD steps of the iris MLP over the train rows."""
    spec = get_spec("iris")
    args = spec.model_args(spec.debug, data.schema.shape, 3)
    model = build_model(spec.architecture, args)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    started = time.monotonic()
    sums = train_epoch(model, batches, spec.task_obj, optimizer)
    return float(sums[0]) / (time.monotonic() - started)


def _plain_loader(path: str, plan: Plan, batch_size: int, task: Task) -> DataLoader:
    """A torch DataLoader over the Parquet parts: reader processes as many as Ray Data's read
    tasks, pyarrow record batches, the same train rows, preprocessing and batch size."""
    files = sorted(str(p) for p in Path(path).glob("*.parquet"))
    return DataLoader(ParquetBatches(files, plan, task, batch_size), None, num_workers=READ_TASKS)


class ParquetBatches(IterableDataset):
    """Preprocessed (X, y) batches of the train rows of Parquet files; each DataLoader worker
    reads every num_workers-th file."""

    def __init__(self, files: list[str], plan: Plan, task: Task, batch_size: int) -> None:
        self.files, self.plan, self.task, self.batch_size = files, plan, task, batch_size

    def __iter__(self) -> Iterator[Any]:
        import pyarrow.parquet as pq
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        mine = self.files if info is None else self.files[info.id :: info.num_workers]
        for file in mine:
            for record in pq.ParquetFile(file).iter_batches(batch_size=self.batch_size):
                batch = {n: record.column(n).to_numpy() for n in record.schema.names}
                keep = self.plan.codes(batch) == 0
                yield collate({n: v[keep] for n, v in batch.items()}, self.plan, self.task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    found = child(args.folder, args.quick)
    (args.folder / "result.json").write_text(json.dumps(found, indent=2))
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.cluster import shutdown_if_started

    shutdown_if_started()


if __name__ == "__main__":
    main()
