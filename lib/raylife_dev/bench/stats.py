"""Interleaved A/B measurement and its summary: medians, min-max and the ratio of medians.

This machine is noisy (2 shared cores), so contenders alternate A B A B ... and every figure is a
median of the repeats; a ratio is only ever formed from figures of the same invocation.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One measured quantity over repeats."""

    values: list[float]
    unit: str

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "values": self.values,
            "unit": self.unit,
        }


@dataclass
class Check:
    """A figure held against the issue's target (`<=` or `>=` `target`)."""

    name: str
    value: float
    op: str
    target: float
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "op": self.op,
            "target": self.target,
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Section:
    """What one part of the benchmark found: its figures, ratios and checks against targets."""

    name: str
    setup: dict[str, Any]
    figures: dict[str, Figure] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, name: str, values: list[float], unit: str) -> Figure:
        self.figures[name] = Figure(values, unit)
        return self.figures[name]

    def ratio(self, numerator: str, denominator: str) -> float:
        return self.figures[numerator].median / self.figures[denominator].median

    def check(self, name: str, value: float, op: str, target: float, note: str = "") -> None:
        self.checks.append(Check(name, value, op, target, note))

    def to_dict(self) -> dict[str, Any]:
        return {
            "setup": self.setup,
            "figures": {k: f.to_dict() for k, f in self.figures.items()},
            "checks": [c.to_dict() for c in self.checks],
            "extra": self.extra,
            "seconds": round(self.seconds, 1),
        }


def alternate(
    contenders: dict[str, Callable[[int], dict[str, float]]],
    repeats: int,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, list[float]]]:
    """Run each contender once per round, in the same order each round (A B A B ...).

    A contender is called with the round index (0-based) and returns named measurements; the
    result maps contender -> measurement -> values, one per round.
    """
    out: dict[str, dict[str, list[float]]] = {name: {} for name in contenders}
    for round_no in range(1, repeats + 1):
        for name, run in contenders.items():
            measured = run(round_no - 1)
            for key, value in measured.items():
                out[name].setdefault(key, []).append(float(value))
            shown = ", ".join(f"{k} {v:.4g}" for k, v in measured.items())
            say(f"    round {round_no}/{repeats} {name}: {shown}")
    return out
