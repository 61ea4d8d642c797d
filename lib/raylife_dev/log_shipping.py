"""What the shipped Fluent Bit sidecar would upload from a Ray session, checked on a real one.

kuberay/fluent-bit.yaml tails Ray's log files with glob patterns. Fluent Bit expands them with
glob(3): not recursive, `*` never crosses `/`, and a name starting with `.` is matched only by a
pattern component that starts with `.` too. `walk` maps a local session's `logs/` folder onto the
pod's (`/tmp/ray/session_latest/logs`, where every Ray container mounts the shared volume) and
sorts each non-empty file into shipped or not; `access_lines` counts Serve's access-log lines under
`logs/serve/`, which only a logging config at INFO with the access log on writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

import yaml

POD_LOGS_DIR = PurePosixPath("/tmp/ray/session_latest/logs")
"""Where Ray's logs sit in a pod: the session of the Ray container, seen through the shared volume."""
ACCESS_LINE = re.compile(
    r" -- (?:\S+ )?(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|CALL) \S+ "
    r"(?:\d{3}|OK|ERROR|CANCELLED) \d+\.\dms$"
)
"""Serve's access-log message (ray.serve._private.logging_utils.access_log_msg: optional client,
method, route, status, latency) after its text format's ` -- `, ending the line."""


def tail_globs(conf: str) -> list[str]:
    """The `Path` globs of every `tail` input of a Fluent Bit config (classic format; a Path
    takes a comma-separated list)."""
    globs: list[str] = []
    for section in re.split(r"^\s*\[", conf, flags=re.M)[1:]:
        name, _, body = section.partition("]")
        keys = {}
        for line in body.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                keys[key.lower()] = value.strip()
        if name.strip().upper() == "INPUT" and keys.get("name") == "tail" and keys.get("path"):
            globs += [p.strip() for p in keys["path"].split(",") if p.strip()]
    return globs


def shipped_globs(kuberay_dir: Path) -> list[str]:
    """The tail globs of the Fluent Bit ConfigMap that kuberay/ ships."""
    for doc in yaml.safe_load_all((kuberay_dir / "fluent-bit.yaml").read_text()):
        if doc and doc.get("kind") == "ConfigMap" and "fluent-bit.conf" in doc.get("data", {}):
            return tail_globs(doc["data"]["fluent-bit.conf"])
    raise ValueError(f"{kuberay_dir / 'fluent-bit.yaml'} holds no ConfigMap with fluent-bit.conf")


def glob_matches(path: PurePosixPath, pattern: str) -> bool:
    """glob(3)'s verdict on one absolute file path: component by component, no `**`."""
    wanted = PurePosixPath(pattern).parts
    if len(wanted) != len(path.parts):
        return False
    return all(
        fnmatchcase(part, glob) and (not part.startswith(".") or glob.startswith("."))
        for part, glob in zip(path.parts, wanted, strict=True)
    )


@dataclass
class LogWalk:
    """Every non-empty regular file under a session's logs/, relative to it."""

    shipped: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return len(self.shipped) + len(self.missed)


def walk(logs_dir: Path, globs: list[str], pod_logs_dir: PurePosixPath = POD_LOGS_DIR) -> LogWalk:
    """Sort each non-empty file of `logs_dir` by whether a glob matches it at its pod path."""
    result = LogWalk()
    for path in sorted(p for p in logs_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        if path.stat().st_size == 0:
            continue
        relative = path.relative_to(logs_dir).as_posix()
        in_pod = pod_logs_dir / relative
        matched = any(glob_matches(in_pod, glob) for glob in globs)
        (result.shipped if matched else result.missed).append(relative)
    return result


def access_lines(logs_dir: Path) -> dict[str, int]:
    """Access-log lines per file of logs/serve/ (files without any left out)."""
    counts = {}
    for path in sorted((logs_dir / "serve").glob("*")):
        if path.is_file():
            with path.open(errors="replace") as lines:
                found = sum(1 for line in lines if ACCESS_LINE.search(line.rstrip()))
            if found:
                counts[path.name] = found
    return counts
