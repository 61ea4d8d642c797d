"""Verbs that move a model's pointer, and its audit trail: `promote`, `rollback`, `models history`.

Promote and rollback go through raylife.promotion (gated, audited); a running local Serve app then
follows the new pointer generation in place, the same way for both.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from raylife.cli.common import add_store_flag, add_tracking_flags, settings_from
from raylife.errors import RaylifeError


def register(verbs: Any) -> None:
    promote = verbs.add_parser(
        "promote", help="make VERSION the one that serves MODEL, if it passes the promotion gate"
    )
    promote.add_argument("model")
    promote.add_argument("version", help="version id or 'latest'")
    promote.add_argument(
        "--force",
        action="store_true",
        help="promote even if it scores worse than the champion (recorded in the history)",
    )
    add_note_flag(promote)
    add_store_flag(promote)
    add_tracking_flags(promote)
    promote.set_defaults(func=cmd_promote)

    rollback = verbs.add_parser(
        "rollback", help="point MODEL back at its previous champion (from its history)"
    )
    rollback.add_argument("model")
    add_note_flag(rollback)
    add_store_flag(rollback)
    add_tracking_flags(rollback)
    rollback.set_defaults(func=cmd_rollback)


def add_history_verb(models_verbs: Any) -> None:
    """`models history MODEL`: registered under `models` by cli/models.py."""
    show = models_verbs.add_parser(
        "history", help="promotions, refusals and rollbacks of MODEL, oldest first"
    )
    show.add_argument("model")
    show.add_argument("--json", action="store_true", help="the entries as a JSON list")
    add_store_flag(show)
    show.set_defaults(func=cmd_history)


def add_note_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default="", help="why, in words (kept in the history)")


def _store_and_mirror(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Settings, the model store and its MLflow mirror (None when tracking is off)."""
    from raylife import tracking
    from raylife.store import ModelStore

    settings = settings_from(args)
    mirror = tracking.mirror(tracking.config_for(settings))
    return settings, ModelStore(settings.store_uri), mirror


def cmd_promote(args: argparse.Namespace) -> None:
    from raylife.promotion import promote

    settings, store, mirror = _store_and_mirror(args)
    outcome = promote(store, args.model, args.version, args.force, args.reason, mirror=mirror)
    if outcome.comparison:
        print(outcome.comparison.table())
    if outcome.action == "refuse":
        raise RaylifeError(outcome.reason)
    print(outcome.line)
    if outcome.action == "promote":
        _follow_serve(settings, args.model, outcome)


def cmd_rollback(args: argparse.Namespace) -> None:
    from raylife.promotion import rollback

    settings, store, mirror = _store_and_mirror(args)
    outcome = rollback(store, args.model, args.reason, mirror=mirror)
    print(outcome.line)
    _follow_serve(settings, args.model, outcome)


def _follow_serve(settings: Any, model: str, outcome: Any) -> None:
    """A running local Serve app loads the pointer's new generation in place, then we wait for it."""
    from raylife.serve import local

    url = local.notify_promotion(settings, model, outcome.pointer.generation)
    if url:
        local.wait_for_version(url, model, outcome.version)
        print(f"the local Serve app at {url}/{model} now serves {outcome.version}")


def cmd_history(args: argparse.Namespace) -> None:
    from raylife import history
    from raylife.registry import get_spec
    from raylife.store import ModelStore

    spec = get_spec(args.model)
    store = ModelStore(settings_from(args).store_uri)
    entries = history.read(store, args.model)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2, default=str))
    elif not entries:
        print(
            f"no promotions of {args.model} recorded in {store.location(args.model, history.HISTORY_FILE)}"
        )
    else:
        print(format_history(entries, f"test_{spec.task_obj.metric}"))


def format_history(entries: list[Any], metric: str) -> str:
    """One row per entry: when, what, from -> to, the primary test metric of both, who, why."""
    header = f"{'when (UTC)':<24} {'action':<8} {'from':<22} {'to':<22} {metric + ' from -> to':<30} {'forced':<6} {'who':<24} reason"
    rows = [header]
    for e in entries:
        metrics = f"{_value(e.from_metrics, metric)} -> {_value(e.to_metrics, metric)}"
        rows.append(
            f"{e.at[:23]:<24} {e.action:<8} {e.from_version or '-':<22} {e.to_version:<22} "
            f"{metrics:<30} {'yes' if e.forced else 'no':<6} {e.user + '@' + e.host:<24} {e.reason}"
        )
    return "\n".join(rows)


def _value(metrics: dict[str, Any], metric: str) -> str:
    value = metrics.get(metric)
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
