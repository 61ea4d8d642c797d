"""Operator verbs: `kuberay-manifests` (check, then regenerate the KubeRay/EKS manifests)."""

from __future__ import annotations

import argparse
from typing import Any


def register(verbs: Any) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.deploy.kuberay import add_site_flags

    manifests = verbs.add_parser(
        "kuberay-manifests",
        help="check, then regenerate the KubeRay/EKS manifests (default folder: kuberay/)",
    )
    add_site_flags(manifests)
    manifests.set_defaults(func=cmd_kuberay_manifests)


def cmd_kuberay_manifests(args: argparse.Namespace) -> None:
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.deploy import kuberay

    for path in kuberay.write_from_args(args):  # checks everything before writing anything
        print(f"wrote {path}")
