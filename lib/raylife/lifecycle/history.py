"""The audit log of one model: every promotion, refusal and rollback, one JSON object per line in
`<store>/<model>/HISTORY.jsonl`, oldest first.

The history is also what a rollback reads: replaying its promotions and rollbacks gives the stack
of champions, and the one below the current champion is the previous one. Callers hold the store's
promotion lock while they read, decide and append (on S3, where there is no lock, two promotions of
one model at the same instant can lose one entry: the last write wins, as for the pointer).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from raylife.errors import RaylifeError
from raylife.lifecycle.store import ModelStore

HISTORY_FILE = "HISTORY.jsonl"

Action = Literal["promote", "refuse", "rollback", "canary_failed"]
"""canary_failed: a challenger failed a live gate and its traffic went back to the champion
(the pointer never moved; `extra` holds the step and the figures that decided)."""


class HistoryError(RaylifeError):
    """The history file cannot be read; nothing was changed."""


@dataclass(frozen=True)
class Entry:
    action: Action
    from_version: str | None
    """The champion before the action (None: there was none)."""
    to_version: str
    """The version promoted, refused or rolled back to."""
    from_metrics: dict[str, float]
    """Test metrics of from_version, as compared (re-evaluated when the splits differed)."""
    to_metrics: dict[str, float]
    forced: bool
    """Promoted with --force despite the gate."""
    source_run: dict[str, Any]
    """How to_version was made: source (train/tune), run name, sweep, checkpoint."""
    reason: str
    user: str
    host: str
    at: str
    """UTC, ISO 8601."""
    generation: int | None = None
    """The pointer's generation after the action (None for a refusal: the pointer did not move)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields written by a newer raylife, kept as they are."""

    def to_dict(self) -> dict[str, Any]:
        """The entry as written: its fields, plus any unknown ones it was read with."""
        data = asdict(self)
        return {**data.pop("extra"), **data}


def new_entry(**fields: Any) -> Entry:
    """An entry stamped with who (user and host) and when (now, UTC)."""
    return Entry(user=_user(), host=socket.gethostname(), at=_now(), **fields)


def read(store: ModelStore, model: str) -> list[Entry]:
    """The entries of `model`, oldest first ([] when it has none). A line that is not an entry
    raises HistoryError naming the file, the line and the fix."""
    payload = store.read_model_file(model, HISTORY_FILE)
    if payload is None:
        return []
    where = store.location(model, HISTORY_FILE)
    entries = []
    for number, line in enumerate(payload.decode("utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            entries.append(_parse(line, f"{where} line {number}"))
    return entries


def append(store: ModelStore, model: str, entries: list[Entry], entry: Entry) -> None:
    """Write `entries` (as just read, under the promotion lock) plus `entry`, atomically."""
    lines = [json.dumps(e.to_dict(), default=str) for e in [*entries, entry]]
    store.replace_model_file(model, HISTORY_FILE, ("\n".join(lines) + "\n").encode())


def champions(entries: list[Entry]) -> list[str]:
    """The stack of champions the promotions and rollbacks leave, oldest at the bottom. A pointer
    set before the history began enters as the first promotion's from_version."""
    stack: list[str] = []
    for entry in entries:
        if entry.action == "promote":
            if not stack and entry.from_version:
                stack.append(entry.from_version)
            if not stack or stack[-1] != entry.to_version:
                stack.append(entry.to_version)
        elif entry.action == "rollback" and stack:
            stack.pop()
    return stack


def previous_champion(entries: list[Entry], current: str) -> str | None:
    """The champion before `current`, or None when the history has none. Refuses when the history
    does not end at `current` (the pointer was moved outside raylife's promote/rollback)."""
    stack = champions(entries)
    if stack and stack[-1] != current:
        raise HistoryError(
            f"the history ends at version {stack[-1]} but the pointer names {current} (moved "
            "outside `raylife promote`); promote the version you want: raylife promote MODEL VERSION"
        )
    return stack[-2] if len(stack) >= 2 else None


def known_metrics(entries: list[Entry], version: str | None) -> dict[str, float]:
    """The test metrics last recorded for `version` in the history ({} when none were)."""
    for entry in reversed(entries):
        if entry.to_version == version and entry.to_metrics:
            return entry.to_metrics
        if entry.from_version == version and entry.from_metrics:
            return entry.from_metrics
    return {}


def _parse(line: str, where: str) -> Entry:
    try:
        data = json.loads(line)
        known = {name for name in Entry.__dataclass_fields__ if name != "extra"}
        entry = Entry(
            **{k: v for k, v in data.items() if k in known},
            extra={k: v for k, v in data.items() if k not in known},
        )
        if entry.action not in get_args(Action) or not entry.to_version:
            raise ValueError(f"action {entry.action!r} to {entry.to_version!r}")
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise HistoryError(
            f"{where} is not a history entry ({exc}); repair or delete that line (one JSON object "
            "per line), then retry: nothing was changed, the pointer is where it was"
        ) from exc
    return entry


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry and no $USER
        return f"uid-{os.getuid()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
