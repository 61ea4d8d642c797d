"""GPU check (needs a CUDA machine; CI has none): MNIST trained with Ray Train on a GPU worker, then
served by a GPU Serve replica, with figures printed as one JSON line.

    python -m jobs.gpu_check [--epochs 8] [--gpus-per-replica 0.5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import httpx
import torch

from raylife.cli import main as raylife
from raylife.config import Settings
from raylife.loadtest import free_port, run_load
from raylife.store import ModelStore


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--gpus-per-replica", type=float, default=0.5)
    parser.add_argument("--requests", type=int, default=2000)
    return parser.parse_args()


def train_on_gpu(epochs: int) -> dict:
    started = time.monotonic()
    code = raylife(
        [
            "train",
            "--model",
            "mnist",
            "--use-gpu",
            "--num-workers",
            "1",
            "--epochs",
            str(epochs),
            "--promote",
        ]
    )
    if code != 0:
        sys.exit(f"GPU training failed (exit {code})")
    store = ModelStore(Settings.from_env().store_uri)
    version = store.pointer("mnist").version
    meta = store.metadata("mnist", version)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "version": version,
        "use_gpu": meta["run"].get("use_gpu"),
        "test_accuracy": round(meta["metrics"]["test_accuracy"], 4),
        "epochs": len(meta["history"]),
    }


def serve_on_gpu(gpus: float, requests: int) -> dict:
    from raylife import serving

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


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device here; run this on a GPU machine")
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    report["train"] = train_on_gpu(args.epochs)
    report["serve"] = serve_on_gpu(args.gpus_per_replica, args.requests)
    print("GPU_CHECK " + json.dumps(report))


if __name__ == "__main__":
    main()
