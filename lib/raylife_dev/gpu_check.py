"""GPU check (needs a CUDA machine; CI has none): MNIST trained with Ray Train on a GPU worker, then
served by a GPU Serve replica, with figures printed as one JSON line.

    raylife gpu-check [--epochs 8] [--gpus-per-replica 0.5]
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import torch

from raylife.catalog.lookup import get_spec
from raylife.cluster import free_port
from raylife.config import TrainConfig
from raylife.errors import RaylifeError
from raylife.lifecycle.train_and_store import train_and_register
from raylife.settings import Settings
from raylife_dev.loadtest import run_load


def train_on_gpu(epochs: int) -> dict:
    started = time.monotonic()
    settings = Settings.from_env()
    hparams = get_spec("mnist").defaults.replace(epochs=epochs)
    cfg = TrainConfig(model="mnist", hparams=hparams, num_workers=1, use_gpu=True)
    _, registered = train_and_register(cfg, settings, promote=True)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "version": registered.version,
        "use_gpu": registered.artifact.run.get("use_gpu"),
        "test_accuracy": round(registered.artifact.metrics["test_accuracy"], 4),
        "epochs": len(registered.artifact.history),
    }


def serve_on_gpu(gpus: float, requests: int) -> dict:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.serve import local as serving

    settings = Settings.from_env()
    local = serving.start(settings, ["mnist"], port=free_port(), num_gpus=gpus)
    try:
        info = httpx.get(f"{local.url}/mnist/info", timeout=30).json()
        answer = serving.query_test_row(local.url, "mnist", *serving.first_test_row("mnist"))
        load = run_load(f"{local.url}/mnist", requests=requests, concurrency=16)
        return {
            "replica_device": info.get("device"),
            "sample": answer,
            "rps_c16": load.rps,
            "p50_ms": load.p50_ms,
            "p99_ms": load.p99_ms,
            "errors": load.errors,
        }
    finally:
        serving.stop(settings)


def run(epochs: int, gpus_per_replica: float, requests: int) -> dict:
    """Train on a GPU worker, serve from a GPU replica; the figures of both."""
    if not torch.cuda.is_available():
        raise RaylifeError("no CUDA device here; run raylife gpu-check on a GPU machine")
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    report["train"] = train_on_gpu(epochs)
    report["serve"] = serve_on_gpu(gpus_per_replica, requests)
    return report
