"""The load-test client against real local HTTP servers (no Ray): counting, retries, the baseline."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raylife.cluster import free_port
from raylife.lifecycle.store import ModelStore
from raylife_dev.loadtest import bare_server, percentile, run_load
from tests.conftest import quick_artifact

BODY = {"row": [5.1, 3.5, 1.4, 0.2]}


class _FlakyHandler(BaseHTTPRequestHandler):
    """Answers 503 to the first FAIL_FIRST requests (by arrival), 200 with a version after."""

    FAIL_FIRST = 10
    TRUNCATE = False
    """When set, a failing request gets a 200 whose body stops short of its content-length (what
    a client sees when the replica answering it is killed mid-response)."""

    counter = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with self.lock:
            type(self).counter += 1
            fail = type(self).counter <= self.FAIL_FIRST
        payload = json.dumps({"version": "v1"}).encode()
        self.send_response(200 if fail and self.TRUNCATE else 503 if fail else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if fail and self.TRUNCATE:
            self.wfile.write(payload[:3])
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_url() -> Iterator[str]:
    _FlakyHandler.counter = 0
    _FlakyHandler.TRUNCATE = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/iris"
    server.shutdown()


def test_503_without_retries_is_counted_as_an_error(flaky_url):
    result = run_load(flaky_url, requests=40, concurrency=4, warmup=0, body=BODY)
    assert result.errors == {"503": 10} and result.ok_final == 30 and result.retries == 0
    assert result.ok_first_try == result.ok_final


def test_retries_turn_503s_into_successes_and_are_reported_apart(flaky_url):
    # 4 workers share the first 10 failures: one request can meet at most 3 of them in a row.
    result = run_load(flaky_url, requests=40, concurrency=4, retries=3, warmup=0, body=BODY)
    assert result.ok_final == 40 and result.errors == {}
    assert result.retries == 10 and 30 <= result.ok_first_try < 40
    assert result.versions == {"v1": 40}


def test_a_response_cut_short_is_retried_not_a_crash(flaky_url):
    _FlakyHandler.TRUNCATE = True
    result = run_load(flaky_url, requests=40, concurrency=4, retries=3, warmup=0, body=BODY)
    assert result.ok_final == 40 and result.errors == {} and result.retries == 10
    without_retries = run_load(flaky_url, requests=8, concurrency=2, warmup=0, body=BODY)
    assert without_retries.ok_final == 8  # the first 10 arrivals are spent: all answer in full
    _FlakyHandler.counter = 0
    failed = run_load(flaky_url, requests=12, concurrency=2, warmup=0, body=BODY)
    assert failed.errors == {"ClientPayloadError": 10} and failed.ok_final == 2


def test_connection_errors_are_named():
    url = f"http://127.0.0.1:{free_port()}/iris"  # nothing listens there
    result = run_load(url, requests=5, concurrency=2, retries=1, warmup=0, body=BODY)
    assert result.ok_final == 0 and result.retries == 5
    assert list(result.errors) == ["ClientConnectorError"] and sum(result.errors.values()) == 5


def test_percentile_picks_ranked_values():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile(values, 100) == 100 and percentile([3.0], 99) == 3.0


@pytest.mark.slow  # ~4 s: starts the bare uvicorn process, in make test only
def test_bare_baseline_serves_the_same_api(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    store.promote("iris", store.register(quick_artifact("iris")))
    with bare_server("iris", str(tmp_path / "store")) as url:
        result = run_load(f"{url}/iris", requests=50, concurrency=4, warmup=0)
    assert result.ok_final == 50 and result.errors == {}
    assert list(result.versions) == [store.pointer("iris").version]
