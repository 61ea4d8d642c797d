"""The HTTP contract every Serve application shares: the request size limit and the JSON error body.

Kept free of torch: the Serve controller imports each application's module in a build task of its
own, and the `pool` app loads models only in its replicas, so neither should pay for importing torch.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

MAX_ROWS = 256
"""Most rows (or images) one prediction request may carry."""


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    """Errors: JSON bodies {"error": <kind>, "message": <what is wrong and how to fix it>}."""
    return JSONResponse({"error": kind, "message": message, **extra}, status_code=status)
