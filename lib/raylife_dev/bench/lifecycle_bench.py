"""Lifecycle section: wall time of the main job (`make run` = `raylife run`), install excluded.

It runs as its own process with its own local Ray cluster and a fresh RAYLIFE_HOME, exactly as a
user's `make run` after the first-run install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from raylife.errors import RaylifeError
from raylife_dev.bench.stats import Section

MAKE_RUN_ARGS = ["run", "--models", "all", "--samples", "4"]
"""What `make run` passes (Makefile: MODELS ?= all, SAMPLES ?= 4)."""


def run(home: Path, say: Callable[[str], None] = print) -> Section:
    section = Section("lifecycle", {"command": "raylife " + " ".join(MAKE_RUN_ARGS)})
    run_home = home / f"lifecycle-{int(time.time())}"
    log = home / f"{run_home.name}.log"
    say(f"  lifecycle: raylife {' '.join(MAKE_RUN_ARGS)} (log: {log})")
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.run(
            [sys.executable, "-m", "raylife.cli", *MAKE_RUN_ARGS],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAYLIFE_HOME": str(run_home)},
            check=False,
        )
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RaylifeError(f"`raylife run` failed (exit {process.returncode}); see {log}")
    section.add("make run wall_s", [wall], "s")
    section.check("make run wall time (s)", wall, "<=", 180.0, "one run: it takes minutes")
    section.seconds = wall
    return section
