"""Verbs over MLflow: `ui` (the MLflow UI of the local store) and `models sync` (the MLflow
registry brought back in line with the store). Tracking itself: raylife.tracking.runs."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import Any

from raylife.cli.common import add_store_flag, add_tracking_flags, settings_from
from raylife.errors import RaylifeError
from raylife.settings import Settings, local_mlflow_uri

UI_HOST = "127.0.0.1"
UI_START_TIMEOUT_S = 120.0
"""The first start of the server migrates a new store's tables: tens of seconds on 2 cores."""


def register(verbs: Any) -> None:
    ui = verbs.add_parser("ui", help="the MLflow UI of the local tracking store, on 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000, help="port of the UI (default: 5000)")
    add_tracking_flags(ui)
    ui.set_defaults(func=cmd_ui)


def add_sync_verb(models_verbs: Any) -> None:
    """`models sync [MODEL]`: registered under `models` by cli/models.py."""
    sync = models_verbs.add_parser(
        "sync", help="mirror every stored version into the MLflow registry, alias the champion"
    )
    sync.add_argument("model", nargs="?", help="one model (default: every model in the store)")
    add_store_flag(sync)
    add_tracking_flags(sync)
    sync.set_defaults(func=cmd_sync)


def ui_command(settings: Settings, port: int) -> list[str]:
    """`mlflow server` over the local store, bound to loopback, one worker process."""
    assert settings.mlflow_uri is not None
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        settings.mlflow_uri,
        "--default-artifact-root",
        str(settings.mlflow_artifacts or (settings.mlflow_dir / "artifacts").as_uri()),
        "--host",
        UI_HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def cmd_ui(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    if settings.mlflow_uri is None:
        raise RaylifeError(
            "tracking is off (--no-tracking or RAYLIFE_MLFLOW_URI=off); nothing to show"
        )
    if settings.mlflow_uri.startswith(("http://", "https://")):
        print(f"the tracking server serves its own UI: {settings.mlflow_uri}")
        return
    if settings.mlflow_uri != local_mlflow_uri(settings.home):
        print(f"note: {settings.mlflow_uri} is not this home's store ({settings.home})")
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{UI_HOST}:{args.port}"
    # No job runner (MLflow's GenAI jobs): a UI over the local store needs none, and it would
    # start more processes on a small machine.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    process = subprocess.Popen(ui_command(settings, args.port), env=env)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: the server goes too
    try:
        _wait_ready(process, url, args.port)
        print(f"MLflow UI of {settings.mlflow_uri}: {url} (Ctrl-C stops it)", flush=True)
        process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _wait_ready(process: subprocess.Popen, url: str, port: int) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import httpx

    from raylife.waiting import wait_until

    def ready() -> bool:
        if process.poll() is not None:
            raise RaylifeError(
                f"the MLflow UI exited with code {process.returncode} before answering on {url}; "
                f"is port {port} taken? pass another with --port"
            )
        return httpx.get(f"{url}/health", timeout=2).status_code == 200

    wait_until(
        ready,
        UI_START_TIMEOUT_S,
        f"the MLflow UI did not answer on {url} within {UI_START_TIMEOUT_S:.0f} s",
        ignore=(httpx.HTTPError,),
    )


def cmd_sync(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife.lifecycle.store import ModelStore
    from raylife.tracking import runs as tracking

    settings = settings_from(args)
    config = tracking.config_for(settings)
    if config is None:
        raise RaylifeError(
            "tracking is off (--no-tracking or RAYLIFE_MLFLOW_URI=off); nothing to sync"
        )
    store = ModelStore(settings.store_uri)
    models = [get_spec(args.model).name] if args.model else store.models()
    # lazy: the mirror imports mlflow (seconds)
    from raylife.tracking.registry_mirror import Mirror

    mirror, failed = Mirror(config), []
    for model in models:
        count, problems = mirror.sync(store, model)
        pointer = store.pointer(model)
        champion = f", champion {pointer.version}" if pointer else ", no champion"
        print(f"{model}: {count} version(s) mirrored to {config.uri}{champion}")
        failed += problems
    if failed:
        raise RaylifeError(
            failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
        )
