"""The Fluent Bit glob matcher the rehearsal walks a real session with (raylife_dev.log_shipping):
glob(3)'s semantics, the shipped config parsed from kuberay/, and that the rehearsal's log and
health checks fail on what they guard against (the one-level glob the sidecar once had, a
logging config without access lines, a proxy answering anything but 200)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
import yaml

from raylife.errors import RaylifeError
from raylife_dev import log_shipping, rehearsal

ROOT = Path(__file__).resolve().parents[2]
OLD_GLOBS = ["/tmp/ray/session_latest/logs/*"]
"""The sidecar's first input: one folder level only, so Serve's own logs were never shipped."""


@pytest.fixture
def session_logs(tmp_path: Path) -> Path:
    """A session's logs/ as Ray 2.60 lays it out, with an empty file and a nested folder."""
    logs = tmp_path / "session_2026-01-01_00-00-00_000000_1" / "logs"
    files = {
        "raylet.out": "started\n",
        "gcs_server.out": "started\n",
        "job-driver-raysubmit_1.log": "done\n",
        "serve/controller_123.log": "INFO ... -- Deploying app 'iris'.\n",
        "serve/proxy_10.0.0.5_456.log": (
            "INFO 2026-01-01 00:00:01,000 proxy 10.0.0.5 7f3a -- POST /iris 200 3.2ms\n"
            "INFO 2026-01-01 00:00:02,000 proxy 10.0.0.5 7f3b -- 10.0.0.9:5500 GET /readyz 503 1.0ms\n"
        ),
        "serve/replica_iris_ModelServer_ab12.log": (
            "INFO 2026-01-01 00:00:01,000 iris_ModelServer ab12 7f3a -- POST /iris 200 2.1ms\n"
            "INFO 2026-01-01 00:00:03,000 iris_ModelServer ab12 -- Loaded version v1.\n"
        ),
        "events/event_GCS.log": "{}\n",
        "old/worker-abc-01000000-7.err": "Traceback\n",
        "events/empty.log": "",
    }
    for name, text in files.items():
        (logs / name).parent.mkdir(parents=True, exist_ok=True)
        (logs / name).write_text(text)
    return logs


def test_the_shipped_globs_ship_every_file_of_both_levels(session_logs):
    globs = log_shipping.shipped_globs(ROOT / "kuberay")
    walked = log_shipping.walk(session_logs, globs)
    assert walked.missed == []
    assert walked.files == 8  # the empty file is not counted
    assert "serve/proxy_10.0.0.5_456.log" in walked.shipped


def test_the_old_one_level_glob_misses_serve_and_is_caught(session_logs):
    walked = log_shipping.walk(session_logs, OLD_GLOBS)
    assert sorted(walked.missed) == [
        "events/event_GCS.log",
        "old/worker-abc-01000000-7.err",
        "serve/controller_123.log",
        "serve/proxy_10.0.0.5_456.log",
        "serve/replica_iris_ModelServer_ab12.log",
    ]


def test_a_file_two_levels_down_is_not_shipped_by_the_two_level_globs(session_logs):
    deep = session_logs / "train" / "run-1" / "controller.log"
    deep.parent.mkdir(parents=True)
    deep.write_text("x\n")
    walked = log_shipping.walk(session_logs, log_shipping.shipped_globs(ROOT / "kuberay"))
    assert walked.missed == ["train/run-1/controller.log"]


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("/tmp/ray/session_latest/logs/raylet.out", "/tmp/ray/session_latest/logs/*", True),
        ("/tmp/ray/session_latest/logs/serve/a.log", "/tmp/ray/session_latest/logs/*", False),
        ("/tmp/ray/session_latest/logs/serve/a.log", "/tmp/ray/session_latest/logs/*/*", True),
        ("/tmp/ray/session_latest/logs/raylet.out", "/tmp/ray/session_latest/logs/*/*", False),
        ("/tmp/ray/session_latest/logs/.hidden", "/tmp/ray/session_latest/logs/*", False),
        ("/tmp/ray/session_latest/logs/.hidden", "/tmp/ray/session_latest/logs/.*", True),
        ("/tmp/ray/session_latest/logs/a.log", "/tmp/ray/session_latest/logs/*.log", True),
        ("/tmp/ray/session_latest/logs/a.out", "/tmp/ray/session_latest/logs/*.log", False),
    ],
)
def test_glob_semantics_are_glob3s(path, pattern, expected):
    assert log_shipping.glob_matches(PurePosixPath(path), pattern) is expected


def test_tail_globs_reads_every_tail_input_and_its_comma_list():
    conf = (
        "[SERVICE]\n    Flush 5\n"
        "[INPUT]\n    Name tail\n    Path /a/*, /a/*/*\n"
        "[INPUT]\n    Name systemd\n    Path /ignored\n"
        "[INPUT]\n    Name  tail\n    Path  /b/*.log\n"
    )
    assert log_shipping.tail_globs(conf) == ["/a/*", "/a/*/*", "/b/*.log"]


def test_access_lines_are_counted_per_serve_file(session_logs):
    assert log_shipping.access_lines(session_logs) == {
        "proxy_10.0.0.5_456.log": 2,
        "replica_iris_ModelServer_ab12.log": 1,
    }


def _kuberay_with_globs(folder: Path, globs: list[str]) -> Path:
    """A copy of kuberay/fluent-bit.yaml whose tail input has these globs instead."""
    config_map = yaml.safe_load((ROOT / "kuberay" / "fluent-bit.yaml").read_text())
    conf = config_map["data"]["fluent-bit.conf"]
    shipped = ",".join(log_shipping.tail_globs(conf))
    config_map["data"]["fluent-bit.conf"] = conf.replace(shipped, ",".join(globs))
    folder.mkdir()
    (folder / "fluent-bit.yaml").write_text(yaml.safe_dump(config_map))
    return folder


def test_the_rehearsals_log_check_passes_the_shipped_config_and_fails_the_old_glob(
    session_logs, tmp_path
):
    assert rehearsal.check_logs(session_logs, ROOT / "kuberay") == {
        "files": 8,
        "shipped": 8,
        "access_lines": {"proxy": 2, "replica": 1},
    }
    old = _kuberay_with_globs(tmp_path / "old", OLD_GLOBS)
    with pytest.raises(RaylifeError, match=r"5 of 8 log files match no Fluent Bit Path.*serve/"):
        rehearsal.check_logs(session_logs, old)


def test_the_rehearsals_log_check_fails_without_access_lines(session_logs):
    for path in (session_logs / "serve").glob("*"):
        path.write_text("INFO 2026-01-01 00:00:01,000 proxy 10.0.0.5 -- Proxy starting.\n")
    with pytest.raises(RaylifeError, match="log_level INFO and the access log on"):
        rehearsal.check_logs(session_logs, ROOT / "kuberay")


def test_the_rehearsals_health_check_fails_on_a_non_200_or_an_empty_window():
    proxies = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    answered = {"health": {200: 9}, "model": {200: 9}}
    result = {
        "health_path": "/-/healthz",
        "killed": {"pool": "SERVE_REPLICA::pool#ModelPool#a"},
        "in_window": {p: answered for p in proxies},
        "throughout": {p: answered for p in proxies},
    }
    rehearsal._check_health(result, proxies)
    bad = {
        **result,
        "throughout": {
            **result["throughout"],
            proxies[1]: {**answered, "health": {200: 8, 503: 1}},
        },
    }
    with pytest.raises(RaylifeError, match=r"127.0.0.1:2: health answered \{200: 8, 503: 1\}"):
        rehearsal._check_health(bad, proxies)
    empty = {**result, "in_window": {proxies[0]: answered}}
    with pytest.raises(RaylifeError, match=r"127.0.0.1:2: no health request answered"):
        rehearsal._check_health(empty, proxies)
