"""A third-party load generator for the serve bench: wrk (C, event-driven), when it is installed.

raylife's own load client is Python: on a 2-core machine it takes most of a core, the same core the
servers under test need, so it understates every server and Serve most (more processes to feed).
wrk costs a few per cent of a core. Debian: `apt-get install wrk`; absent, callers skip it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylife.errors import RaylifeError

_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def available() -> bool:
    return shutil.which("wrk") is not None


def lua_string(text: str) -> str:
    """A Lua long-bracket literal holding `text` verbatim (no escapes to get wrong)."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def run(
    url: str, body: dict[str, Any], seconds: float, connections: int, threads: int = 2
) -> WrkResult:
    """POST `body` to `url` for `seconds` over `connections` kept-alive connections."""
    if not available():
        raise RaylifeError("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="rl-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_SCRIPT.format(body=lua_string(json.dumps(body))))
        command = [
            "wrk",
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RaylifeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    return parse(done.stdout)


def parse(output: str) -> WrkResult:
    """wrk's --latency report -> figures. Raises naming the line it could not find."""

    def find(pattern: str, what: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise RaylifeError(f"wrk's output has no {what}:\n{output}")
        return match

    total = find(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", "request count")
    p50 = find(r"^\s*50%\s+([\d.]+)(us|ms|s|m)", "50% latency (was --latency given?)")
    p99 = find(r"^\s*99%\s+([\d.]+)(us|ms|s|m)", "99% latency")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    requests = int(total.group(1))
    seconds = float(total.group(2)) * _UNITS_MS[total.group(3)] / 1000
    return WrkResult(
        requests=requests,
        seconds=round(seconds, 3),
        rps=round(requests / seconds, 1) if seconds else 0.0,
        p50_ms=round(float(p50.group(1)) * _UNITS_MS[p50.group(2)], 3),
        p99_ms=round(float(p99.group(1)) * _UNITS_MS[p99.group(2)], 3),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )
