"""Verbs that serve: `serve` (foreground Ray Serve), `serve-configs`."""

from __future__ import annotations

import argparse
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


def cmd_serve_configs(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.serve import config as serve_config

    for path in serve_config.write_rendered():
        print(f"wrote {path}")
