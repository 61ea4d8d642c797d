"""What a node of an EKS node group can hold, from one table of instance types.

A pod schedules only where its requests fit the node's *allocatable* resources: the instance's
capacity less what the EKS AMI reserves for the kubelet and the container runtime (kube-reserved),
the kubelet's eviction threshold, and the DaemonSets every node runs. Ray pod sizes are derived
from here (`share`), and every pod of every manifest is checked against it (`fit_errors`), so
pod sizes cannot drift from the node groups in kuberay/eks/cluster.yaml.

Reservations follow the EKS AMI (nodeadm on AL2023, bootstrap.sh on AL2):
  kube-reserved CPU     6% of the first core, 1% of the next, 0.5% of the next 2, 0.25% above 4
  kube-reserved memory  255 MiB + 11 MiB per pod the node may hold (max pods)
  eviction threshold    memory.available < 100 MiB
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from raylife.errors import RaylifeError

NODE_GROUP_LABEL = "raylife.io/node-group"
EVICTION_MIB = 100
KERNEL_SHARE = 0.05
"""A node reports less memory than the instance's nominal GiB (kernel, firmware): ~4-5% on
Nitro instances (a 16 GiB g5.xlarge reports ~15.3 GiB). 5% keeps the estimate on the safe side."""
DAEMONSET_CPU_M = 250
DAEMONSET_MEMORY_MIB = 512
"""Every node runs aws-node (VPC CNI + network policy agent), kube-proxy, the EBS CSI node plugin,
and on GPU nodes the NVIDIA device plugin: 250m CPU / 512 MiB covers their requests with room."""


@dataclasses.dataclass(frozen=True)
class InstanceType:
    """One EC2 instance type, as `aws ec2 describe-instance-types` and the EKS max-pods list give it."""

    vcpus: int
    memory_gib: int
    max_pods: int
    """EKS max pods (VPC CNI: ENIs * (IPv4 per ENI - 1) + 2, capped at 110 below 30 vCPUs)."""
    gpus: int = 0
    gpu: str = ""
    usd_per_hour: float = 0.0
    """us-west-2 on-demand, approximate (2026-11); the idle-cost table in docs/deploy-eks.md."""


INSTANCE_TYPES: dict[str, InstanceType] = {
    "m6i.large": InstanceType(2, 8, 29, usd_per_hour=0.096),
    "m6i.xlarge": InstanceType(4, 16, 58, usd_per_hour=0.192),
    "m6i.2xlarge": InstanceType(8, 32, 58, usd_per_hour=0.384),
    "m6i.4xlarge": InstanceType(16, 64, 110, usd_per_hour=0.768),
    "m7i.2xlarge": InstanceType(8, 32, 58, usd_per_hour=0.4032),
    "g5.xlarge": InstanceType(4, 16, 58, gpus=1, gpu="nvidia-a10g", usd_per_hour=1.006),
    "g5.2xlarge": InstanceType(8, 32, 58, gpus=1, gpu="nvidia-a10g", usd_per_hour=1.212),
    "g6.xlarge": InstanceType(4, 16, 58, gpus=1, gpu="nvidia-l4", usd_per_hour=0.8048),
}


def kube_reserved_cpu_m(vcpus: int) -> int:
    """The EKS AMI's kube-reserved CPU in millicores."""
    tiers = [(1, 0.06), (1, 0.01), (2, 0.005), (max(vcpus - 4, 0), 0.0025)]
    reserved, left = 0.0, vcpus
    for cores, share in tiers:
        used = min(cores, left)
        reserved += used * 1000 * share
        left -= used
    return round(reserved)


def kube_reserved_memory_mib(max_pods: int) -> int:
    return 255 + 11 * max_pods


@dataclasses.dataclass(frozen=True)
class Resources:
    cpu_m: int
    memory_mib: int
    gpus: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_m + other.cpu_m, self.memory_mib + other.memory_mib, self.gpus + other.gpus
        )

    def __str__(self) -> str:
        gpus = f", {self.gpus} GPU" if self.gpus else ""
        return f"{self.cpu_m}m CPU, {self.memory_mib}Mi{gpus}"


def instance(name: str, where: str = "kuberay/eks/cluster.yaml") -> InstanceType:
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        raise RaylifeError(
            f"{where}: unknown instance type {name!r}; choose one of {', '.join(INSTANCE_TYPES)}, "
            "or add it to INSTANCE_TYPES in lib/raylife/deploy/nodes.py "
            "(vCPU, memory, max pods from `aws ec2 describe-instance-types`)"
        ) from None


def allocatable(name: str, max_pods: int | None = None) -> Resources:
    """What pods other than the DaemonSets may request on one node of this instance type."""
    spec = instance(name)
    pods = max_pods or spec.max_pods
    capacity_mib = int(spec.memory_gib * 1024 * (1 - KERNEL_SHARE))
    return Resources(
        cpu_m=spec.vcpus * 1000 - kube_reserved_cpu_m(spec.vcpus) - DAEMONSET_CPU_M,
        memory_mib=capacity_mib
        - kube_reserved_memory_mib(pods)
        - EVICTION_MIB
        - DAEMONSET_MEMORY_MIB,
        gpus=spec.gpus,
    )


def share(name: str, per_node: int, beside: Resources, max_pods: int | None = None) -> Resources:
    """The largest pod of which `per_node` fit one node, less `beside` (its sidecars): CPU in
    100m steps, memory in 512 MiB steps, the node's GPUs split evenly."""
    free = allocatable(name, max_pods)
    cpu = (free.cpu_m // per_node - beside.cpu_m) // 100 * 100
    memory = (free.memory_mib // per_node - beside.memory_mib) // 512 * 512
    if cpu < 1000 or memory < 1024:
        raise RaylifeError(
            f"{per_node} Ray pods per {name} node leave {cpu}m CPU / {memory}Mi each, less than "
            "1 CPU / 1Gi; choose a larger instance type in kuberay/eks/cluster.yaml or fewer pods "
            "per node in lib/raylife/deploy/kuberay.py"
        )
    return Resources(cpu, memory, free.gpus // per_node)


# ---- node groups (kuberay/eks/cluster.yaml) -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NodeGroup:
    name: str
    instance_type: str
    labels: dict[str, str]
    taints: tuple[tuple[str, str, str], ...]
    """(key, value, effect) of each taint."""
    max_pods: int | None = None

    def allocatable(self) -> Resources:
        return allocatable(self.instance_type, self.max_pods)


def node_groups(cluster_config: dict[str, Any]) -> dict[str, NodeGroup]:
    """The managed node groups of an eksctl ClusterConfig, each checked against INSTANCE_TYPES."""
    groups = {}
    for group in cluster_config.get("managedNodeGroups") or []:
        where = f"kuberay/eks/cluster.yaml: node group {group.get('name')!r}"
        instance(str(group.get("instanceType")), where)
        taints = tuple(
            (t["key"], str(t.get("value", "")), t["effect"]) for t in group.get("taints") or []
        )
        groups[group["name"]] = NodeGroup(
            group["name"],
            group["instanceType"],
            {str(k): str(v) for k, v in (group.get("labels") or {}).items()},
            taints,
            group.get("maxPodsPerNode"),
        )
    return groups


def load_node_groups(path: Path) -> dict[str, NodeGroup]:
    return node_groups(yaml.safe_load(path.read_text()))


# ---- does a pod fit? ---------------------------------------------------------------------------


_MEMORY_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "": 1 / (1024 * 1024)}


def cpu_m(quantity: str | int | float) -> int:
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)


def memory_mib(quantity: str | int) -> int:
    text = str(quantity)
    for suffix in ("Ki", "Mi", "Gi", "Ti"):
        if text.endswith(suffix):
            return round(float(text[: -len(suffix)]) * _MEMORY_UNITS[suffix])
    return round(float(text) / (1024 * 1024))


def pod_requests(pod_spec: dict[str, Any]) -> Resources:
    """Sum of the containers' requests (init containers run before, one at a time)."""
    total = Resources(0, 0)
    for container in pod_spec.get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        total = total + Resources(
            cpu_m(requests.get("cpu", 0)),
            memory_mib(requests.get("memory", 0)),
            int(requests.get("nvidia.com/gpu", 0)),
        )
    return total


def _selects(pod_spec: dict[str, Any], group: NodeGroup) -> bool:
    selector = pod_spec.get("nodeSelector") or {}
    if any(group.labels.get(k) != v for k, v in selector.items()):
        return False
    tolerations = pod_spec.get("tolerations") or []
    return all(
        any(
            t.get("key") == key
            and t.get("effect") in (None, effect)
            and (t.get("operator") == "Exists" or t.get("value") == value)
            for t in tolerations
        )
        for key, value, effect in group.taints
        if effect in ("NoSchedule", "NoExecute")
    )


def fit_errors(where: str, pod_spec: dict[str, Any], groups: dict[str, NodeGroup]) -> list[str]:
    """Problems of one pod: no node group its selector and tolerations lead to, or too small."""
    wants = pod_requests(pod_spec)
    candidates = [g for g in groups.values() if _selects(pod_spec, g)]
    if not candidates:
        return [
            f"{where}: no node group matches nodeSelector {pod_spec.get('nodeSelector')} and its "
            "tolerations; fix the pod template or kuberay/eks/cluster.yaml"
        ]
    fitting = [
        g
        for g in candidates
        if wants.cpu_m <= g.allocatable().cpu_m
        and wants.memory_mib <= g.allocatable().memory_mib
        and wants.gpus <= g.allocatable().gpus
    ]
    if fitting:
        return []
    group = candidates[0]
    return [
        f"{where}: requests {wants}, but a {group.instance_type} node of group {group.name!r} has "
        f"{group.allocatable()} allocatable after kube-reserved, eviction and DaemonSets; "
        "shrink the pod or choose a larger instance type in kuberay/eks/cluster.yaml"
    ]
