"""The load test's baseline: one model's API (the same FastAPI app as the Serve replica) in a single
uvicorn process, no Ray. `python -m raylife_dev.bare --model iris --store S --port P`."""

from __future__ import annotations

import argparse
from typing import Any

from raylife.serve.api import build_model_api
from raylife.serve.model_service import ModelService


class PrefixRoute:
    """Serve-style routing: /<model>/... reaches the app as /... with root_path=/<model>."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                scope = {**scope, "path": path[len(self.prefix) :] or "/", "root_path": self.prefix}
        await self.app(scope, receive, send)


def build(model: str, store: str) -> Any:
    service = ModelService(model, store)

    async def predict(X: Any) -> tuple[str, list[dict[str, Any]]]:
        loaded, predictions = service.predict(X)
        return loaded.version, predictions

    return PrefixRoute(build_model_api(service, predict), f"/{model}")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    return parser


def main() -> None:
    import uvicorn

    args = parser().parse_args()
    uvicorn.run(
        build(args.model, args.store),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
