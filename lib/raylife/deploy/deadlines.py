"""Each RayJob's activeDeadlineSeconds, sized to its job from named parts.

KubeRay counts a RayJob's deadline from the moment an attempt starts creating its RayCluster, and
starts the count again on each retry (backoffLimit), but never retries an attempt that ran past the
deadline. So a deadline is one attempt: the cluster's start, the job's own work, and for each
failure the job's runtime may recover from inside the attempt, the time its watchdog takes to see a
stall plus a restart. A stuck trial or worker then costs minutes inside the job (raylife.training.watchdog),
and the deadline is only the backstop for what no watchdog covers; it is no longer a blanket
4 hours that a hang would sit out.

The parts ride in an annotation (`raylife.io/deadline-budget`), so `checks.deadline_problems` can
recompute each deadline and hold its stall allowance against the watchdog's actual bound.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from raylife.config import StallPolicy

ANNOTATION = "raylife.io/deadline-budget"

CLUSTER_START_S = 15 * 60
"""A new RayCluster: nodes from the autoscaler (a few minutes), the multi-GB image pulled onto
each, Ray started and the workers joined."""
RESTART_S = 5 * 60
"""One recovery inside an attempt: a replacement worker (maybe on a new node, image pulled) and the
run resumed from its latest checkpoint."""
IN_JOB_FAILURES = 2
"""Failures a job recovers from inside one attempt: `max_failures`'s default (TrainConfig,
BatchConfig), which the jobs keep."""


@dataclass(frozen=True)
class JobBudget:
    """What one attempt of a RayJob may take."""

    work_s: int
    """The job's own work on its cluster, with room (see WORK_S)."""
    stall_s: int
    """The longest the job's watchdog waits before it acts on a stall."""
    failures: int = IN_JOB_FAILURES
    start_s: int = CLUSTER_START_S
    restart_s: int = RESTART_S

    @property
    def deadline_s(self) -> int:
        return self.start_s + self.work_s + self.failures * (self.stall_s + self.restart_s)

    def annotation(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_annotation(cls, text: str) -> JobBudget:
        return cls(**json.loads(text))


def worker_stall_s() -> int:
    """A training worker's or a batch actor's watch (StallPolicy's floor: the bound when the pace
    is fast, as the tutorial models' steps are)."""
    return int(StallPolicy.floor_s)


def sweep_stall_s(max_failures: int = IN_JOB_FAILURES) -> int:
    """A sweep driver's watch over a DDP trial (tune.driver_stall_policy): it waits out each of the
    trial's own Ray Train restarts first."""
    return int(StallPolicy().over_trial(max_failures).floor_s)


WORK_S: dict[str, int] = {
    "train": 10 * 60,
    "tune": 30 * 60,
    "batch-predict": 30 * 60,
}
"""Work per job kind, with room. A tutorial model's 2-worker training run takes under 2 minutes
on 2 CPUs here (`raylife bench`), a 4-trial MNIST sweep about 80 s; the tune job runs 8 trials, 2
at a time. Batch prediction depends on the input: 30 minutes at --actors 4 covers tens of millions
of tabular rows; edit the job's budget for larger inputs."""


def budget_for(kind: str) -> JobBudget:
    stall = sweep_stall_s() if kind == "tune" else worker_stall_s()
    return JobBudget(work_s=WORK_S[kind], stall_s=stall)


def stall_needed_s(entrypoint: str) -> int:
    """The watchdog bound a job's stall allowance must cover, from what its entrypoint runs."""
    sweep = "jobs.tune" in entrypoint or " retrain " in f"{entrypoint} "  # retrain runs a sweep
    return sweep_stall_s() if sweep else worker_stall_s()


def problems(name: str, spec: dict[str, Any], annotations: dict[str, str]) -> list[str]:
    """What is wrong with one RayJob's deadline."""
    text = annotations.get(ANNOTATION)
    if text is None:
        return [
            f"RayJob {name}: activeDeadlineSeconds {spec.get('activeDeadlineSeconds')} is not "
            f"sized to its job (no {ANNOTATION} annotation); generate it from deploy.deadlines"
        ]
    budget = JobBudget.from_annotation(text)
    out = []
    if spec.get("activeDeadlineSeconds") != budget.deadline_s:
        out.append(
            f"RayJob {name}: activeDeadlineSeconds {spec.get('activeDeadlineSeconds')} != its "
            f"budget {budget.deadline_s} ({text})"
        )
    needed = stall_needed_s(spec.get("entrypoint", ""))
    if budget.stall_s < needed:
        out.append(
            f"RayJob {name}: its budget allows {budget.stall_s} s per stall, but its watchdog "
            f"may wait {needed} s: the deadline would end a job its watchdog was recovering"
        )
    return out
