"""Verbs that move a model's pointer, and its audit trail: `promote`, `rollback`, `models history`.

Promote and rollback go through raylife.lifecycle.promotion (gated, audited); a running local Serve app then
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
    add_rollout_flags(promote)
    add_store_flag(promote)
    add_tracking_flags(promote)
    promote.set_defaults(func=cmd_promote)

    rollout = verbs.add_parser(
        "rollout", help="MODEL's canary or shadow in progress: its live figures, or --abort it"
    )
    rollout.add_argument("model")
    rollout.add_argument(
        "--abort", action="store_true", help="end it now: all traffic back to the champion"
    )
    add_store_flag(rollout)
    rollout.set_defaults(func=cmd_rollout)

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


def add_rollout_flags(parser: argparse.ArgumentParser) -> None:
    """--canary / --shadow: promote through live traffic on the running Serve app."""
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--canary",
        metavar="PERCENTS",
        help="send these shares of traffic to VERSION in turn (e.g. 10,50,100), each for "
        "--dwell-s, gated on live 5xx rate, latency (median, p99) and fed-back labels; promoted after the "
        "last step, rolled back at the first failed gate",
    )
    how.add_argument(
        "--shadow",
        type=float,
        metavar="FRACTION",
        help="mirror this fraction of requests to VERSION for --dwell-s and report how it "
        "compares; callers only get the champion's answers and nothing is promoted",
    )
    parser.add_argument(
        "--dwell-s", type=float, default=60.0, help="seconds per canary step or shadow run"
    )
    parser.add_argument(
        "--sticky-header",
        metavar="NAME",
        help="requests with the same value of this header see the same version",
    )


def _store_and_mirror(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Settings, the model store and its MLflow mirror (None when tracking is off)."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.lifecycle.store import ModelStore
    from raylife.tracking import runs as tracking

    settings = settings_from(args)
    config, mirror = tracking.config_for(settings), None
    if config is not None:
        # lazy: the mirror imports mlflow (seconds), needed only when tracking is on
        from raylife.tracking.registry_mirror import Mirror

        mirror = Mirror(config)
    return settings, ModelStore(settings.store_uri), mirror


def cmd_promote(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.lifecycle.promotion import promote

    if args.canary is not None or args.shadow is not None:
        return cmd_rollout_promote(args)
    settings, store, mirror = _store_and_mirror(args)
    outcome = promote(store, args.model, args.version, args.force, args.reason, mirror=mirror)
    if outcome.comparison:
        print(outcome.comparison.table())
    if outcome.action == "refuse":
        raise RaylifeError(outcome.reason)
    print(outcome.line)
    if outcome.action == "promote":
        _follow_serve(settings, args.model, outcome)


def cmd_rollout_promote(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.serve import canary

    if args.force:
        raise RaylifeError("--force skips gates; a canary is all gates: drop one of them")
    if args.shadow is not None and not 0 < args.shadow <= 1:
        raise RaylifeError(f"--shadow {args.shadow:g} is not in (0, 1]; e.g. --shadow 0.5")
    if not args.dwell_s > 0:
        raise RaylifeError(f"--dwell-s must be above 0 seconds, got {args.dwell_s:g}")
    plan = canary.Plan(
        model=args.model,
        version=args.version,
        steps=canary.parse_steps(args.canary) if args.canary is not None else (),
        dwell_s=args.dwell_s,
        shadow=args.shadow,
        sticky_header=args.sticky_header,
    )
    settings, _, mirror = _store_and_mirror(args)
    result = canary.run(settings, plan, mirror=mirror)
    for step in result.steps:
        print(json.dumps(step))
    if result.shadow is not None:
        print(json.dumps(result.shadow))
    if result.action in ("rolled_back", "refused"):
        raise RaylifeError(result.line)
    print(result.line)


def cmd_rollout(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.serve import canary

    settings = settings_from(args)
    if args.abort:
        print(canary.abort(settings, args.model))
    else:
        print(json.dumps(canary.status(settings, args.model), indent=1))


def cmd_rollback(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.lifecycle.promotion import rollback

    settings, store, mirror = _store_and_mirror(args)
    outcome = rollback(store, args.model, args.reason, mirror=mirror)
    print(outcome.line)
    _follow_serve(settings, args.model, outcome)


def _follow_serve(settings: Any, model: str, outcome: Any) -> None:
    """A running local Serve app loads the pointer's new generation in place, then we wait for it."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.serve import local

    url = local.notify_promotion(settings, model, outcome.pointer.generation)
    if url:
        local.wait_for_version(url, model, outcome.version)
        print(f"the local Serve app at {url}/{model} now serves {outcome.version}")


def cmd_history(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.catalog.lookup import get_spec
    from raylife.lifecycle import history
    from raylife.lifecycle.store import ModelStore

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
