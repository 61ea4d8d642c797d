"""`raylife bench`: the sections in order, one local Ray cluster for train/tune/serve, then the
lifecycle run in its own process (its own cluster, after ours is down)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from raylife.config import TrainConfig, TuneConfig
from raylife.errors import RaylifeError
from raylife.settings import Settings
from raylife_dev.bench import (
    batch_bench,
    data_bench,
    drift_bench,
    lifecycle_bench,
    oip_capture_bench,
    pool_bench,
    report,
    rollout_bench,
    serve_bench,
    soak_bench,
    train_bench,
    trials_bench,
    tune_bench,
)
from raylife_dev.bench.stats import Section

SECTIONS = (
    "train",
    "trials",
    "soak",
    "tune",
    "serve",
    "oip-capture",
    "pool",
    "rollout",
    "drift",
    "batch",
    "data",
    "lifecycle",
)
OWN_PROCESS = ("data", "lifecycle")
"""Sections with their own cluster, run after ours is down (data caps its object store)."""
QUICK_SECTIONS = ("train", "trials", "soak", "tune", "serve", "oip-capture")
"""--quick skips the lifecycle section (`raylife run` alone takes minutes), pool (its small size
runs in tests/integration/test_pool.py), drift (tests/integration/test_drift.py), batch and data
(`--sections batch --quick` / `--sections data --quick` run their small sizes; data starts a
second, capped cluster, which the test session's shared cluster must not meet)."""


def parse_sections(text: str | None, quick: bool) -> list[str]:
    if not text:
        return list(QUICK_SECTIONS if quick else SECTIONS)
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise RaylifeError(
            f"unknown bench section(s) {unknown}; choose from: {', '.join(SECTIONS)}"
        )
    return [s for s in SECTIONS if s in chosen]


def cluster_cpus() -> float:
    """Logical CPUs for the bench cluster: what a `make run` sweep needs (the largest section)."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife.training.tune import required_cpus

    return required_cpus(TrainConfig(model="iris", hparams=get_spec("iris").defaults), TuneConfig())


def run_bench(
    home: Path,
    out_dir: Path,
    quick: bool,
    sections: list[str],
    say: Callable[[str], None] = print,
) -> tuple[list[Section], Path, Path]:
    """Run the chosen sections; write reports/bench.{json,md}; return them and their paths."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import ray
    import torch

    from raylife.cluster import ensure_ray
    from raylife.serve import local as serving

    home.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env(home=str(home), store=str(home / "store"))
    started, stamp = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    done: list[Section] = []
    in_cluster = [s for s in sections if s not in OWN_PROCESS]
    if in_cluster:
        ensure_ray(num_cpus=cluster_cpus(), cluster_env=serving.serving_cluster_env(own_ports=True))
        runners = {
            "train": train_bench.run,
            "trials": trials_bench.run,
            "soak": soak_bench.run,
            "tune": tune_bench.run,
            "serve": serve_bench.run,
            "oip-capture": oip_capture_bench.run,
            "pool": pool_bench.run,
            "batch": batch_bench.run,
            "rollout": rollout_bench.run,
            "drift": drift_bench.run,
        }
        try:
            for name in in_cluster:
                say(f"\n[{name}]")
                done.append(runners[name](settings, quick, say))
        finally:
            serving.stop(settings)  # Serve, then the cluster this process started
    if "data" in sections:
        say("\n[data]")
        done.append(data_bench.run(home, quick, say))
    if "lifecycle" in sections:
        say("\n[lifecycle]")
        done.append(lifecycle_bench.run(home, say))
    meta = {
        "quick": quick,
        "sections": sections,
        "started": stamp,
        "seconds": time.monotonic() - started,
        "ray": ray.__version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    json_path, md_path = report.write(out_dir, done, meta)
    return done, json_path, md_path
