"""`raylife monitor MODEL`: the promoted version's captured traffic, window by window, against
its reference profile (raylife.data.profile, tests in raylife.monitoring.drift).

Each run reads the captures (raylife.serve.capture) written since the last window it judged,
cuts them into windows of `window_requests` requests of the promoted version (a canary's other
version is not its traffic), judges every complete window and writes, per window:
    <store>/<model>/monitor/reports/<version>/<window end>.json   findings, thresholds, verdict
    <store>/<model>/monitor/reports/<version>/<window end>.png    drifted values vs reference
and MLflow metrics on the version's training run (monitor_psi_max, monitor_drifted, step = window
number). The cursor (<store>/<model>/monitor/cursor.json) moves past the judged windows only, so
a partial window waits for the next run. The monitor never promotes or rolls back anything.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from raylife import storage
from raylife.catalog.specs import ModelSpec
from raylife.config import TrackingConfig
from raylife.data.profile import Profile, monitored
from raylife.errors import RaylifeError
from raylife.lifecycle.artifact import Artifact
from raylife.lifecycle.captures import CAPTURE_DIR, SCHEMA, day_of, read_feedback
from raylife.lifecycle.store import ModelStore
from raylife.monitoring.drift import Finding, Thresholds, compare, live_metric
from raylife.tasks import TASKS
from raylife.tracking.runs import log_version_metrics

MONITOR_DIR = "monitor"
CURSOR_FILE = "cursor.json"
EXIT_DRIFT = 3
"""`raylife monitor`'s exit code when a window drifted (0: none did; 2: nothing could be judged)."""


@dataclass
class WindowReport:
    model: str
    version: str
    number: int
    """Windows of this version judged so far, this one included."""
    start: str
    end: str
    requests: int
    rows: int
    findings: list[Finding]
    thresholds: Thresholds
    files: list[str] = field(default_factory=list)
    live: dict[str, list[Any]] = field(default_factory=dict, repr=False)
    """The window's values of what drifted (for the plot; not in the JSON)."""

    @property
    def drifted(self) -> list[Finding]:
        """What moved: a worse live metric first, then values by PSI."""
        return sorted(
            (f for f in self.findings if f.drifted), key=lambda f: (f.value is None, -f.psi)
        )

    def reason(self) -> str:
        """Why it drifted, as the history would say it: `drift: PSI 0.31 on carat, ...`."""
        return "drift: " + ", ".join(f.reason() for f in self.drifted[:3])

    def line(self) -> str:
        verdict = self.reason() if self.drifted else "no drift"
        return (
            f"{self.model} {self.version} window {self.number} ({self.requests} requests, "
            f"{self.rows} rows, {self.start} .. {self.end}): {verdict}"
        )

    def metrics(self) -> dict[str, float]:
        """The window's figures as MLflow metrics (step: the window's number)."""
        return {
            "monitor_psi_max": max((f.psi for f in self.findings), default=0.0),
            "monitor_drifted": float(len(self.drifted)),
            "monitor_rows": float(self.rows),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "window": self.number,
            "start": self.start,
            "end": self.end,
            "requests": self.requests,
            "rows": self.rows,
            "drifted": [f.name for f in self.drifted],
            "reason": self.reason() if self.drifted else "",
            "thresholds": dict(self.thresholds.__dict__),
            "findings": [f.to_dict() for f in self.findings],
        }


def run(
    store: ModelStore,
    model: str,
    thresholds: Thresholds,
    window_requests: int,
    version: str | None = None,
    tracking: TrackingConfig | None = None,
    tolerance: tuple[float, float] = (0.0, 0.0),
) -> list[WindowReport]:
    """Judge every complete window captured since the last run; write reports, move the cursor,
    log each window's figures on the version's MLflow run (best-effort: a problem is printed).
    tolerance: the promotion gate's (absolute, relative) slack, which a live metric judged from
    feedback must exceed (significantly) to count. Raises RaylifeError (one line) when nothing can be judged: no profile, no captures, too few."""
    version, artifact = store.load(model, version)
    profile = _profile(artifact, model, version)
    cursor = _read_cursor(store, model, version)
    table = read_rows(store, model, version, artifact, cursor.get("time"))
    windows = cut_windows(table, window_requests)
    if not windows:
        raise RaylifeError(_waiting(store, model, version, table, window_requests, cursor))
    truths = _truths(read_feedback(store.uri, model))
    reports: list[WindowReport] = []
    for rows in windows:
        number = int(cursor.get("windows", 0)) + len(reports) + 1
        report = judge(model, version, number, rows, artifact, profile, thresholds)
        metric = _live_metric(rows, truths, artifact, thresholds, tolerance)
        if metric is not None:
            report.findings.append(metric)
        reports.append(report)
    for report in reports:
        _write_report(store, report, profile)
        problem = log_version_metrics(
            tracking, model, str(artifact.run.get("run_name", "")), report.metrics(), report.number
        )
        if problem:
            print(f"raylife: monitor figures not logged to MLflow ({problem})")
    last = windows[-1]["time"][-1].as_py()
    _write_cursor(store, model, version, last, int(cursor.get("windows", 0)) + len(reports))
    return reports


def run_declared(
    store: ModelStore,
    spec: ModelSpec,
    window_requests: int | None = None,
    version: str | None = None,
    tracking: TrackingConfig | None = None,
) -> list[WindowReport]:
    """`run` as the model's declaration sets it: [monitor]'s thresholds and window (unless
    `window_requests` overrides it) and [gate]'s tolerance for the live metric."""
    window = spec.monitor.window_requests if window_requests is None else window_requests
    if window < 1:
        raise RaylifeError(f"--window-requests {window}: give a positive number of requests")
    thresholds = Thresholds.declared(spec.monitor)
    tolerance = (spec.gate.absolute, spec.gate.relative)
    return run(store, spec.name, thresholds, window, version, tracking, tolerance)


def judge(
    model: str,
    version: str,
    number: int,
    rows: Any,
    artifact: Artifact,
    profile: Profile,
    thresholds: Thresholds,
) -> WindowReport:
    """One window (a pyarrow table of captured rows) against the profile."""
    if rows.num_rows < thresholds.min_rows:
        raise RaylifeError(
            f"{model} {version}: a window of {rows.num_rows} rows is below the {thresholds.min_rows} "
            "rows the tests need; raise --window-requests or [monitor] min_rows"
        )
    schema = artifact.schema
    inputs = np.asarray(rows["inputs"].to_pylist(), dtype=np.float64)
    live = monitored(inputs.reshape(len(inputs), *schema.shape), schema.kind)
    answers = None
    if profile.predictions is not None:
        column = "label" if profile.predictions.kind == "classes" else "value"
        answers = (profile.predictions, rows[column].to_pylist())
    times = rows["time"]
    report = WindowReport(
        model=model,
        version=version,
        number=number,
        start=times[0].as_py().isoformat(),
        end=times[-1].as_py().isoformat(),
        requests=len(set(rows["request_id"].to_pylist())),
        rows=rows.num_rows,
        findings=compare(profile.features, live, answers, thresholds),
        thresholds=thresholds,
    )
    names = list(profile.features)
    for finding in report.drifted:
        if finding.name == "predictions" and answers is not None:
            report.live[finding.name] = list(answers[1])
        elif finding.name in names:
            report.live[finding.name] = live[:, names.index(finding.name)].tolist()
    return report


def _truths(feedback: Any) -> dict[tuple[str, int], tuple[str | None, float | None]]:
    keys = zip(feedback["request_id"].to_pylist(), feedback["row"].to_pylist(), strict=True)
    answers = zip(feedback["label"].to_pylist(), feedback["value"].to_pylist(), strict=True)
    return dict(zip(keys, answers, strict=True))


def _live_metric(
    rows: Any,
    truths: dict[tuple[str, int], tuple[str | None, float | None]],
    artifact: Artifact,
    thresholds: Thresholds,
    tolerance: tuple[float, float],
) -> Finding | None:
    """The window's answers that have a truth, scored, against the version's test metric."""
    task = TASKS[artifact.task]
    test_value = artifact.metrics.get(f"test_{task.metric}")
    if not truths or test_value is None:
        return None
    keys = zip(rows["request_id"].to_pylist(), rows["row"].to_pylist(), strict=True)
    answers = zip(rows["label"].to_pylist(), rows["value"].to_pylist(), strict=True)
    scores = []
    for key, (label, value) in zip(keys, answers, strict=True):
        if key in truths:
            truth_label, truth_value = truths[key]
            if task.is_classification:
                scores.append(float(label == truth_label))
            elif value is not None and truth_value is not None:
                scores.append((value - truth_value) ** 2)
    rows_info = artifact.data.get("rows", {})
    test_rows = int(artifact.data.get("test_rows_scored") or rows_info.get("test", 0))
    bar = task.worst_acceptable(test_value, *tolerance)
    return live_metric(
        task.is_classification, np.asarray(scores), test_value, test_rows, bar, thresholds.alpha
    )


# --------------------------------------------------------------------------------------------------
# Reading captures


def read_rows(
    store: ModelStore, model: str, version: str, artifact: Artifact, since: str | None
) -> Any:
    """The version's captured rows after `since` (ISO time), oldest first. A file that cannot be
    read, or whose rows do not fit the version's input schema, is refused by name."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = store.root.joined(f"{model}/{CAPTURE_DIR}")
    after = datetime.fromisoformat(since) if since else None
    parts = []
    for path, _ in storage.list_files(folder):
        if after is not None and day_of(path) < after.date().isoformat():
            continue  # a day folder wholly before the cursor
        uri = folder.uri_of(path)
        try:
            part = pq.read_table(path, filesystem=folder.fs, schema=SCHEMA)
        except Exception as exc:  # pyarrow's errors for a truncated or foreign file vary
            raise RaylifeError(
                f"{uri}: not a readable capture file ({storage.root_cause(exc)}); move it out "
                f"of {folder.uri_of(folder.path)} and run again"
            ) from None
        part = part.filter(pc.equal(part["version"], version))
        if after is not None:
            part = part.filter(pc.greater(part["time"], pa.scalar(after, part["time"].type)))
        _check_fits(part, artifact, version, uri)
        parts.append(part)
    if not parts:
        return SCHEMA.empty_table()
    return pa.concat_tables(parts).sort_by([("time", "ascending"), ("request_id", "ascending")])


def _check_fits(part: Any, artifact: Artifact, version: str, uri: str) -> None:
    import pyarrow.compute as pc

    if part.num_rows == 0:
        return
    lengths = pc.list_value_length(part["inputs"])
    wanted = artifact.schema.n_values
    if pc.any(pc.not_equal(lengths, wanted)).as_py():
        got = pc.min_max(lengths).as_py()
        raise RaylifeError(
            f"{uri}: rows labelled version {version} carry {got['min']}..{got['max']} input values, "
            f"but {version} takes {wanted}; these captures are another model's or version's: "
            "move the file aside"
        )


def cut_windows(table: Any, window_requests: int) -> list[Any]:
    """Complete windows of `window_requests` requests each, in time order; the rest waits. A
    window never splits rows that share a timestamp, so the cursor (a time) is exact."""
    if table.num_rows == 0:
        return []
    ids = table["request_id"].to_pylist()
    times = table["time"].to_pylist()
    windows, start, seen = [], 0, set()
    for i, request in enumerate(ids):
        seen.add(request)
        at_end = i + 1 == len(ids) or times[i + 1] != times[i]
        if len(seen) >= window_requests and at_end:
            windows.append(table.slice(start, i + 1 - start))
            start, seen = i + 1, set()
    return windows


def _waiting(
    store: ModelStore,
    model: str,
    version: str,
    table: Any,
    window_requests: int,
    cursor: dict[str, Any],
) -> str:
    if (
        table.num_rows == 0
        and not cursor
        and not storage.exists(store.root, f"{model}/{CAPTURE_DIR}")
    ):
        return (
            f"no captures of {model} in {store.uri}: serve it with capture on (user_config "
            "capture: 0.1 on its deployment, docs/monitoring.md) and send traffic, then run again"
        )
    since = f"since {cursor['time']}" if cursor.get("time") else "so far"
    got = len(set(table["request_id"].to_pylist()))
    return (
        f"{model} {version}: {got} request(s) captured {since}; a window needs {window_requests}: "
        "wait for more traffic or lower --window-requests"
    )


def _profile(artifact: Artifact, model: str, version: str) -> Profile:
    if not artifact.profile:
        raise RaylifeError(
            f"{model} {version} has no reference profile (registered before profiles existed); "
            f"train and promote a new version: raylife train --model {model} --promote"
        )
    return Profile.from_dict(artifact.profile)


# --------------------------------------------------------------------------------------------------
# Cursor and reports


def _read_cursor(store: ModelStore, model: str, version: str) -> dict[str, Any]:
    """Where the last run stopped for this version ({} for a version not judged yet)."""
    try:
        cursor = json.loads(storage.read_bytes(store.root, f"{model}/{MONITOR_DIR}/{CURSOR_FILE}"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RaylifeError(
            f"{store.uri}/{model}/{MONITOR_DIR}/{CURSOR_FILE} is not valid JSON; delete it to "
            "judge every capture again"
        ) from None
    return cursor if cursor.get("version") == version else {}


def _write_cursor(
    store: ModelStore, model: str, version: str, last: datetime, windows: int
) -> None:
    cursor = {"version": version, "time": last.isoformat(), "windows": windows}
    storage.replace_file(
        store.root, f"{model}/{MONITOR_DIR}/{CURSOR_FILE}", json.dumps(cursor).encode()
    )


def report_folder(model: str, version: str) -> str:
    return f"{model}/{MONITOR_DIR}/reports/{version}"


def _write_report(store: ModelStore, report: WindowReport, profile: Profile) -> None:
    stem = f"{report_folder(report.model, report.version)}/{_stamp(report.end)}"
    files = {f"{stem}.json": json.dumps(report.to_dict(), indent=2).encode()}
    if report.drifted:
        files[f"{stem}.png"] = plot(report, profile)
    for rel, payload in files.items():
        storage.write_bytes(store.root, rel, payload)
        report.files.append(store.root.uri_of(store.root.at(rel)))


def _stamp(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y%m%dT%H%M%S%f")


def plot(report: WindowReport, profile: Profile) -> bytes:
    """PNG: each drifted value's reference CDF against the window's (classes: their fractions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drifted = report.drifted[:6]
    fig, axes = plt.subplots(1, len(drifted), figsize=(3.6 * len(drifted), 3.0), squeeze=False)
    for ax, finding in zip(axes[0], drifted, strict=True):
        if finding.value is not None:  # a live metric from feedback: the window's vs the test's
            ax.bar(["test", "window"], [finding.reference or 0.0, finding.value])
            ax.set_title(f"{finding.reason()}\n{finding.test} {finding.statistic:.1f}")
            continue
        reference = (
            profile.predictions if finding.name == "predictions" else profile.features[finding.name]
        )
        window = report.live.get(finding.name, [])
        if reference is not None and reference.kind == "values":
            ax.plot(reference.percentiles, np.linspace(0, 1, 101), label="reference")
            values = np.sort(np.asarray(window, dtype=np.float64))
            ax.step(values, np.arange(1, len(values) + 1) / max(len(values), 1), label="window")
            ax.set_ylabel("CDF")
        elif reference is not None:
            names = list(reference.fractions)
            seen = [str(v) for v in window]
            share = [seen.count(n) / max(len(seen), 1) for n in names]
            x = np.arange(len(names))
            ax.bar(x - 0.2, list(reference.fractions.values()), 0.4, label="reference")
            ax.bar(x + 0.2, share, 0.4, label="window")
            ax.set_xticks(x, names, rotation=45)
        ax.legend(fontsize="small")
        ax.set_title(
            f"{finding.name}\nPSI {finding.psi:.2f}, {finding.test} {finding.statistic:.2f}"
        )
    fig.suptitle(f"{report.model} {report.version}: window {report.number}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
