"""`raylife serve` stops as Kubernetes and systemd stop it: SIGTERM drains like Ctrl-C. The
requests in flight finish, Serve and the cluster it started go away, the exit code is 0, and no
signal stack dump is printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from raylife.cluster import free_port
from raylife.lifecycle.store import ModelStore
from raylife.waiting import poll
from tests.conftest import prepared, quick_artifact

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_drains_and_exits_zero(tmp_path):
    home = tmp_path / "home"
    store = ModelStore(str(home / "store"))
    store.promote("boston", store.register(quick_artifact("boston")))
    port = free_port()
    env = {**os.environ, "RAYLIFE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)  # its own local cluster, as a user's `raylife serve` starts one
    server = subprocess.Popen(
        [sys.executable, "-m", "raylife.cli", "serve", "--models", "boston", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/boston"
    body = {"rows": prepared("boston").test_raw.X[:64].tolist()}
    try:
        assert poll(
            lambda: httpx.post(url, json=body).status_code == 200, 180, ignore=(httpx.HTTPError,)
        )
        # The apps answer before the CLI has seen them all RUNNING and armed its SIGTERM drain;
        # the drain under test starts once it says it is serving.
        assert server.stdout is not None
        while "serving " not in (line := server.stdout.readline()):
            assert line, "raylife serve exited before it said it was serving"
        results: list[tuple[float, float, int | str]] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as session:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        status: int | str = session.post(url, json=body).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    results.append((sent, time.monotonic(), status))

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(2.0)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=90)
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, err[-3000:]
    assert "SIGTERM: draining" in out
    assert "Traceback" not in err and "Fatal Python error" not in err, err[-3000:]
    # Every request sent before the signal was answered, those still in flight at it included.
    before = [status for sent, _, status in results if sent < signalled]
    in_flight = [status for sent, ended, status in results if sent < signalled < ended]
    print(f"\n{len(before)} requests before SIGTERM, {len(in_flight)} of them in flight at it")
    assert before and all(status == 200 for status in before), sorted(map(str, set(before)))
    with httpx.Client() as probe:  # nothing listens any more
        try:
            probe.get(f"http://127.0.0.1:{port}/", timeout=2)
            still_up = True
        except httpx.HTTPError:
            still_up = False
    assert not still_up, "Serve still answers after raylife serve exited"
    assert not (home / "serve.json").exists()
