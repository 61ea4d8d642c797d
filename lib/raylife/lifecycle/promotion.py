"""Promote and roll back: the gated, audited ways to move a model's pointer.

Each is one transaction under the store's promotion lock: read the history (a corrupt one stops
everything before the pointer moves), decide, move the pointer, append the entry. A refusal is an
outcome, not an exception, so a sweep can register a version and carry on; it is recorded too.
Serve replicas follow the pointer's generation, so a rollback reaches them exactly as a promotion.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from raylife.catalog.lookup import get_spec
from raylife.data.contracts import PreparedData
from raylife.errors import ArtifactError, RaylifeError
from raylife.lifecycle import history
from raylife.lifecycle.artifact import Artifact
from raylife.lifecycle.gate import Comparison, GateUnavailable, compare, schema_mismatch
from raylife.lifecycle.store import ModelStore, Pointer

if TYPE_CHECKING:  # imports mlflow: only when a mirror is passed
    from raylife.tracking.registry_mirror import Mirror

RUN_FIELDS = ("source", "run_name", "sweep", "checkpoint")
"""What of an artifact's run the history keeps as its source run."""


@dataclass(frozen=True)
class Outcome:
    action: Literal["promote", "refuse", "rollback", "unchanged"]
    model: str
    version: str
    """The version promoted, refused or rolled back to."""
    champion: str | None
    """The champion before (None: there was none)."""
    pointer: Pointer | None
    """The pointer after the action; it moved for promote and rollback only."""
    comparison: Comparison | None
    forced: bool
    reason: str
    mirror_problem: str = ""
    """Why the MLflow registry does not show the change ("" = it does, or there is no mirror)."""

    @property
    def line(self) -> str:
        """What happened, in one line (and what the MLflow mirror missed, if anything)."""
        return f"{self._line}; {self.mirror_problem}" if self.mirror_problem else self._line

    @property
    def _line(self) -> str:
        if self.action == "refuse":
            return f"not promoted: {self.reason}"
        assert self.pointer is not None
        generation = f"(generation {self.pointer.generation})"
        if self.action == "rollback":
            return f"rolled back {self.model} {self.champion} -> {self.version} {generation}"
        if self.action == "unchanged":
            return (
                f"{self.model} {self.version} is already the champion {generation}; nothing changed"
            )
        forced = ", forced past the gate" if self.forced else ""
        return f"promoted {self.model} -> {self.version} {generation}{forced}"


def promote(
    store: ModelStore,
    model: str,
    version: str,
    force: bool = False,
    note: str = "",
    data: PreparedData | None = None,
    mirror: Mirror | None = None,
) -> Outcome:
    """Promote `version` if the gate lets it (or `force`); record the promotion or the refusal.
    `data`: the candidate's prepared data when the caller has it (a sweep). Raises only for what
    stops before any decision (unknown model or version, corrupt artifact or history). `mirror`:
    the MLflow registry follows, after the transaction (its failure is in the outcome's line)."""
    get_spec(model)
    version, candidate = store.load(model, version)
    with store.promotion_lock(model):
        entries = history.read(store, model)
        current = store.pointer(model)
        if current is not None and current.version == version:
            return Outcome("unchanged", model, version, version, current, None, False, "")
        champion = _champion(store, model, current)
        verdict = _judge(model, version, candidate, champion, data)
        forced = bool(verdict.problem) and force and verdict.forceable
        before, comparison = _version(current), verdict.comparison
        if verdict.problem and not forced:
            refusal = f"{verdict.problem}; the pointer stays at {before}; {verdict.fix}"
            outcome = Outcome("refuse", model, version, before, None, comparison, False, refusal)
        else:
            reason = (
                f"forced past the gate: {verdict.problem}"
                if forced
                else _passed(comparison, champion)
            )
            pointer = store.move_pointer(model, version)
            outcome = Outcome(
                "promote", model, version, before, pointer, comparison, forced, reason
            )
        _record(store, model, entries, outcome, candidate, champion, note)
    return _mirrored(store, outcome, mirror)


def rollback(
    store: ModelStore, model: str, note: str = "", mirror: Mirror | None = None
) -> Outcome:
    """Point `model` back at the champion before the current one (from the history)."""
    get_spec(model)
    with store.promotion_lock(model):
        entries = history.read(store, model)
        current = store.pointer(model)
        if current is None:
            raise RaylifeError(
                f"{model} has no champion to roll back from in store {store.uri}; "
                f"promote one first: raylife promote {model} VERSION"
            )
        previous = history.previous_champion(entries, current.version)
        if previous is None:
            raise RaylifeError(
                f"{model} has no previous champion in {store.location(model, history.HISTORY_FILE)}; "
                f"the pointer stays at {current.version}; promote the version you want instead: "
                f"raylife promote {model} VERSION (see: raylife models list {model})"
            )
        _, target = store.load(model, previous)  # never roll back onto a corrupt artifact
        champion = _champion(store, model, current)
        pointer = store.move_pointer(model, previous)
        outcome = Outcome(
            "rollback", model, previous, current.version, pointer, None, False, "rollback"
        )
        _record(store, model, entries, outcome, target, champion, note)
    return _mirrored(store, outcome, mirror)


def _mirrored(store: ModelStore, outcome: Outcome, mirror: Mirror | None) -> Outcome:
    """The MLflow alias follows the pointer, outside the lock and best-effort: the store is the
    source of truth, so a mirror failure is reported, never raised (`raylife models sync`)."""
    if mirror is None or outcome.pointer is None:
        return outcome
    problem = mirror.set_champion(store, outcome.model, outcome.pointer.version)
    return replace(outcome, mirror_problem=problem) if problem else outcome


def _champion(
    store: ModelStore, model: str, current: Pointer | None
) -> tuple[str, Artifact | None] | None:
    """(version, artifact) of the current champion; the artifact is None when it is unreadable
    (a corrupt champion must not block the promotion that replaces it)."""
    if current is None:
        return None
    try:
        return current.version, store.load(model, current.version)[1]
    except ArtifactError:
        return current.version, None


@dataclass(frozen=True)
class _Verdict:
    comparison: Comparison | None
    problem: str = ""
    """Why the candidate may not replace the champion ("" = it may)."""
    fix: str = ""
    forceable: bool = True


def _judge(
    model: str,
    version: str,
    candidate: Artifact,
    champion: tuple[str, Artifact | None] | None,
    data: PreparedData | None,
) -> _Verdict:
    champion_version, artifact = champion or (None, None)
    if champion_version is None or artifact is None:
        return _Verdict(None)
    mismatch = schema_mismatch(candidate, artifact)
    if mismatch:
        return _Verdict(
            None,
            f"{model} {version} cannot replace champion {champion_version}: {mismatch}",
            f"promote a version trained on {model}'s features (see: raylife models list {model}); "
            "a new schema needs a new Serve deployment, and --force does not override this",
            forceable=False,
        )
    try:
        comparison = compare(version, candidate, champion_version, artifact, data)
    except GateUnavailable as exc:
        return _Verdict(None, exc.problem, exc.fix)
    if comparison.passed:
        return _Verdict(comparison)
    return _Verdict(
        comparison,
        f"{model} {version} is worse than champion {champion_version} ({comparison.summary})",
        f"to promote it anyway: raylife promote {model} {version} --force",
    )


def _passed(comparison: Comparison | None, champion: tuple[str, Artifact | None] | None) -> str:
    if champion is None:
        return "first promotion: no champion to compare with"
    if comparison is None:
        return f"champion {champion[0]} is unreadable: nothing to compare with"
    return f"passed the gate: {comparison.summary}"


def _record(
    store: ModelStore,
    model: str,
    entries: list[history.Entry],
    outcome: Outcome,
    target: Artifact,
    champion: tuple[str, Artifact | None] | None,
    note: str,
) -> None:
    comparison = outcome.comparison
    champion_artifact = champion[1] if champion else None
    entry = history.new_entry(
        action=outcome.action,
        from_version=outcome.champion,
        to_version=outcome.version,
        from_metrics=comparison.champion_metrics
        if comparison
        else _tests(champion_artifact) or history.known_metrics(entries, outcome.champion),
        to_metrics=comparison.candidate_metrics
        if comparison
        else _tests(target) or history.known_metrics(entries, outcome.version),
        forced=outcome.forced,
        source_run={k: target.run[k] for k in RUN_FIELDS if k in target.run},
        reason="; ".join(part for part in (note, outcome.reason) if part),
        generation=outcome.pointer.generation if outcome.pointer else None,
    )
    history.append(store, model, entries, entry)


def _tests(artifact: Artifact | None) -> dict[str, Any]:
    return {
        k: v for k, v in (artifact.metrics if artifact else {}).items() if k.startswith("test_")
    }


def _version(pointer: Pointer | None) -> str | None:
    return pointer.version if pointer else None
