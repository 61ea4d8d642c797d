"""The GPU software stack, in one place: torch version, CUDA build, wheel index, NVIDIA driver.

PyTorch 2.14 publishes CUDA 12.6, 13.0 and 13.2 builds (no 12.8 since 2.12). raylife uses the
CUDA 13.0 build: it is the wheel the tests run here (`2.14.1+cu130`), so the image serves what was
tested. CUDA 13.0 needs an NVIDIA driver of the R580 branch or newer (580.65.06 on Linux). The EKS
AL2023 NVIDIA AMIs ship the 580 branch for every Kubernetes version since the November 2025
releases (awslabs/amazon-eks-ami#2470), so the `gpu` node group of kuberay/eks/cluster.yaml, on
AL2023 and a Kubernetes version listed in AMI_DRIVER_BRANCH, satisfies it.

`stack_errors` checks that the Dockerfiles, kuberay/docker/constraints.txt, docs/deploy-eks.md and
the node group agree with this module; tests/manifests runs it and so does `make kuberay-manifests`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

TORCH_VERSION = "2.14.1"
TORCHVISION_VERSION = "0.29.1"
CUDA_VERSION = "13.0"
CUDA_BUILD = "cu130"
INDEX_URL = {
    "cpu": "https://download.pytorch.org/whl/cpu",
    "gpu": f"https://download.pytorch.org/whl/{CUDA_BUILD}",
}
MIN_DRIVER = "580.65.06"
MIN_DRIVER_BRANCH = 580
EKS_VERSION = "1.35"
"""In EKS standard support until 2027-03-27 (released on EKS 2026-01-28); 1.34's ends 2026-12-02."""
AMI_DRIVER_BRANCH: dict[tuple[str, str], int] = {
    ("AmazonLinux2023", "1.34"): 580,
    ("AmazonLinux2023", "1.35"): 580,
}
"""NVIDIA driver branch of the EKS-optimized NVIDIA AMI, by AMI family and Kubernetes version."""


def _args(dockerfile: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile, flags=re.M))


def dockerfile_errors(variant: str, text: str) -> list[str]:
    where = f"kuberay/docker/Dockerfile.{variant}"
    args = _args(text)
    want = {
        "TORCH_VERSION": TORCH_VERSION,
        "TORCHVISION_VERSION": TORCHVISION_VERSION,
        "TORCH_INDEX_URL": INDEX_URL[variant],
    }
    if variant == "gpu":
        want["TORCH_CUDA"] = CUDA_VERSION
    errors = [
        f"{where}: ARG {name}={args.get(name)}, but lib/raylife/deploy/gpu_stack.py says {value}; "
        "make them agree"
        for name, value in want.items()
        if args.get(name) != value
    ]
    builds = set(re.findall(r"whl/(cu\d+)", text))
    if variant == "gpu" and builds - {CUDA_BUILD}:
        errors.append(f"{where}: names CUDA builds {sorted(builds)}; use only {CUDA_BUILD}")
    return errors


def constraints_errors(text: str) -> list[str]:
    pins = dict(
        line.split("==", 1) for line in text.splitlines() if "==" in line and line[:1] != "#"
    )
    want = {"torch": TORCH_VERSION, "torchvision": TORCHVISION_VERSION}
    return [
        f"kuberay/docker/constraints.txt: {name}=={pins.get(name)}, but gpu_stack says {version}; "
        "regenerate: python -m raylife.deploy.constraints > kuberay/docker/constraints.txt"
        for name, version in want.items()
        if pins.get(name) != version
    ]


def docs_errors(text: str) -> list[str]:
    errors = []
    builds = set(re.findall(r"\bcu1\d\d\b", text)) | set(re.findall(r"whl/(cu\d+)", text))
    if builds != {CUDA_BUILD}:
        errors.append(
            f"docs/deploy-eks.md: names CUDA builds {sorted(builds)}; it must name {CUDA_BUILD} only"
        )
    for needed in (f"torch {TORCH_VERSION}", f"CUDA {CUDA_VERSION}", INDEX_URL["gpu"], MIN_DRIVER):
        if needed not in text:
            errors.append(f"docs/deploy-eks.md: does not state {needed!r}; say it (gpu_stack.py)")
    drivers = {int(d) for d in re.findall(r"driver (?:>= ?|branch |R)?(\d{3})\b", text)}
    if drivers - {MIN_DRIVER_BRANCH}:
        errors.append(
            f"docs/deploy-eks.md: names NVIDIA driver {sorted(drivers)}; CUDA {CUDA_VERSION} "
            f"needs {MIN_DRIVER_BRANCH} ({MIN_DRIVER})"
        )
    return errors


def node_group_errors(cluster_config: dict[str, Any]) -> list[str]:
    version = str((cluster_config.get("metadata") or {}).get("version"))
    errors = []
    for group in cluster_config.get("managedNodeGroups") or []:
        labels = group.get("labels") or {}
        if "nvidia.com/gpu" not in {t.get("key") for t in group.get("taints") or []}:
            continue
        family = str(group.get("amiFamily"))
        branch = AMI_DRIVER_BRANCH.get((family, version))
        where = f"kuberay/eks/cluster.yaml: node group {group.get('name')!r}"
        if branch is None or branch < MIN_DRIVER_BRANCH:
            errors.append(
                f"{where}: the {family} NVIDIA AMI for Kubernetes {version} is not known to ship "
                f"driver >= {MIN_DRIVER} (CUDA {CUDA_VERSION}); use AmazonLinux2023 with one of "
                f"{sorted(v for f, v in AMI_DRIVER_BRANCH if f == family) or ['1.35']}"
            )
        if labels.get("raylife.io/cuda") != CUDA_VERSION:
            errors.append(
                f"{where}: label raylife.io/cuda is {labels.get('raylife.io/cuda')!r}; set it to "
                f"{CUDA_VERSION!r} (the GPU pods select it)"
            )
    return errors


def stack_errors(root: Path) -> list[str]:
    """Every disagreement between this module and the files that restate it."""
    errors = []
    for variant in ("cpu", "gpu"):
        text = (root / "kuberay" / "docker" / f"Dockerfile.{variant}").read_text()
        errors += dockerfile_errors(variant, text)
    errors += constraints_errors((root / "kuberay" / "docker" / "constraints.txt").read_text())
    errors += docs_errors((root / "docs" / "deploy-eks.md").read_text())
    errors += node_group_errors(yaml.safe_load((root / "kuberay/eks/cluster.yaml").read_text()))
    return errors


def main() -> None:
    """python -m raylife.deploy.gpu_stack: the pins `make image-constraints` appends."""
    print(f"torch=={TORCH_VERSION}\ntorchvision=={TORCHVISION_VERSION}")


if __name__ == "__main__":
    main()
