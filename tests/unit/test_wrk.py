"""The serve bench's third-party load generator: wrk's report parsed, and one real run."""

import pytest

from raylife.errors import RaylifeError
from raylife.lifecycle.store import ModelStore
from raylife_dev import wrk
from raylife_dev.loadtest import bare_server
from tests.conftest import quick_artifact

REPORT = """Running 2s test @ http://127.0.0.1:8001/iris
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.69ms    1.52ms  40.71ms   94.67%
    Req/Sec     2.22k   263.52     2.60k    69.05%
  Latency Distribution
     50%  850.00us
     75%    3.91ms
     90%    4.37ms
     99%    1.02s
  9265 requests in 2.10s, 3.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:   4410.21
Transfer/sec:      1.48MB
"""


def test_report_is_parsed_with_its_units():
    result = wrk.parse(REPORT)
    assert (result.requests, result.seconds, result.rps) == (9265, 2.1, 4411.9)
    assert (result.p50_ms, result.p99_ms) == (0.85, 1020.0)
    assert (result.non_2xx, result.socket_errors) == (7, 3)


def test_a_report_without_latencies_is_refused_naming_the_flag():
    without = "\n".join(line for line in REPORT.splitlines() if "%" not in line or "Req" in line)
    with pytest.raises(RaylifeError, match="--latency"):
        wrk.parse(without)


def test_lua_string_holds_any_body_verbatim():
    assert wrk.lua_string('{"a": 1}') == '[[{"a": 1}]]'
    assert wrk.lua_string("x]]y]=]") == "[==[x]]y]=]]==]"


@pytest.mark.slow  # ~6 s: a bare uvicorn process and two 1 s wrk runs, in make test only
def test_wrk_drives_a_real_server(tmp_path):
    if not wrk.available():
        pytest.skip("wrk not installed (apt-get install wrk; .ci/run installs it)")
    store = ModelStore(str(tmp_path / "store"))
    store.promote("iris", store.register(quick_artifact("iris")))
    with bare_server("iris", str(tmp_path / "store")) as url:
        ok = wrk.run(f"{url}/iris", {"row": [5.1, 3.5, 1.4, 0.2]}, 1, 4)
        missing = wrk.run(f"{url}/nothing-here", {"row": [5.1, 3.5, 1.4, 0.2]}, 1, 4)
    assert ok.requests > 0 and ok.non_2xx == 0 and ok.socket_errors == 0
    assert 0 < ok.p50_ms <= ok.p99_ms
    assert missing.requests > 0 and missing.non_2xx == missing.requests
    with pytest.raises(RaylifeError, match=r"wrk failed \(\d+\)"):
        wrk.run("not-a-url", {"row": []}, 1, 1)  # wrk's own complaint, in one line
