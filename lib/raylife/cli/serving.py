"""Verbs that serve: `serve` (foreground Ray Serve), `loadtest`, `serve-configs`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from raylife.cli.common import add_store_flag, model_list, settings_from


def register(verbs: Any) -> None:
    serve = verbs.add_parser("serve", help="serve the promoted models with Ray Serve (foreground)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--models", default="all", help="comma-separated model keys (default: all)")
    serve.add_argument(
        "--num-gpus", type=float, default=0.0, help="GPUs per model replica (e.g. 0.5; default 0)"
    )
    add_store_flag(serve)
    serve.set_defaults(func=cmd_serve)

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

    configs = verbs.add_parser("serve-configs", help="render the Serve configs (base + overlays)")
    configs.set_defaults(func=cmd_serve_configs)


def cmd_serve(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.serve import local

    settings = settings_from(args)
    served = local.start(
        settings, model_list(args.models), port=args.port, host=args.host, num_gpus=args.num_gpus
    )
    print(f"serving {', '.join(served.models)} at {served.url} (Ctrl-C stops)")
    for model in served.models:
        print(f"  POST {served.url}/{model}   docs: {served.url}/{model}/docs")
    print(f"  GET  {served.url}/models   {served.url}/healthz   {served.url}/readyz")
    try:
        received = local.wait_until_stopped()
        print(f"{received}: draining in-flight requests, then stopping Serve")
    finally:
        local.stop(settings)


def cmd_loadtest(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.specs import get_spec
    from raylife.cluster import free_port
    from raylife.serve import local
    from raylife.tools import loadtest

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


def cmd_serve_configs(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.serve import config as serve_config

    for path in serve_config.write_rendered():
        print(f"wrote {path}")
