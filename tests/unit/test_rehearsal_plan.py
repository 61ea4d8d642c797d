"""What the KubeRay rehearsal (`raylife rehearse`) runs, read from kuberay/ without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylife.errors import RaylifeError
from raylife_dev import rehearsal

ROOT = Path(__file__).resolve().parents[2]


def test_short_runs_override_the_manifest_flags():
    assert rehearsal.short("python -m jobs.tune --model mnist --samples 8").endswith(
        "--preset debug --epochs 1 --samples 2 --max-concurrent 1"
    )
    assert "--samples" not in rehearsal.short("python -m jobs.train --model iris --promote")


def test_every_cpu_job_is_rehearsed_and_the_gpu_job_is_not():
    jobs = rehearsal.cpu_job_entrypoints(ROOT / "kuberay")
    assert set(jobs) == {
        "rayjob-train-boston",
        "rayjob-train-ionosphere",
        "rayjob-train-iris",
        "rayjob-train-mnist",
        "rayjob-tune-boston",
        "rayjob-tune-ionosphere",
        "rayjob-tune-iris",
        "rayjob-tune-mnist",
    }


def test_the_train_jobs_differ_only_in_their_model():
    """Why `make test` rehearses rayjob-train-iris alone of the train jobs (`make rehearse` runs
    them all): the others run the same entrypoint with another --model."""
    jobs = rehearsal.cpu_job_entrypoints(ROOT / "kuberay")
    iris = jobs["rayjob-train-iris"]
    for model in ("boston", "ionosphere", "mnist"):
        assert jobs[f"rayjob-train-{model}"] == iris.replace("--model iris", f"--model {model}")


def test_a_rehearsal_of_named_jobs_refuses_unknown_names():
    jobs = rehearsal.cpu_job_entrypoints(ROOT / "kuberay")
    chosen = rehearsal.chosen_jobs(jobs, ["rayjob-tune-mnist"])
    assert list(chosen) == ["rayjob-tune-mnist"]
    assert rehearsal.chosen_jobs(jobs, None) == jobs
    with pytest.raises(RaylifeError, match="no CPU RayJob named rayjob-train-irs; choose from: "):
        rehearsal.chosen_jobs(jobs, ["rayjob-train-irs"])
