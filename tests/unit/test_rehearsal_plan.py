"""What the KubeRay rehearsal (`raylife rehearse`) runs, read from kuberay/ without a cluster."""

from __future__ import annotations

from pathlib import Path

from raylife.deploy import rehearsal

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
        "rayjob-tune-mnist",
    }
