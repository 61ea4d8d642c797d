"""Manifest rules checked by the tests (tests/manifests), not at generation time: packing, tokens,
IAM, what the Makefile applies, serving, observability, tracking IAM, scale subresources, volume
zones, and `load`. The rules `raylife kuberay-manifests` refuses to write without live in the
runtime package (raylife.deploy.checks), whose helpers these share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from raylife.deploy import nodes
from raylife.deploy.checks import (
    Objects,
    _all,
    _service,
    health_check_problems,
    pod_templates,
    ray_cluster,
)

RAY_KINDS = ("RayCluster", "RayJob", "RayService")


def packing_problems(
    objects: Objects, groups: dict[str, nodes.NodeGroup], least: float = 0.85
) -> list[str]:
    """A node group's workers, as many as fit one node, use >= `least` of its CPU."""
    problems = []
    for name, obj in _all(objects):
        cluster = ray_cluster(obj)
        for group in (cluster or {}).get("workerGroupSpecs", []):
            pod = group["template"]["spec"]
            wants = nodes.pod_requests(pod)
            node_group = groups.get((pod.get("nodeSelector") or {}).get(nodes.NODE_GROUP_LABEL, ""))
            if node_group is None or wants.cpu_m == 0:
                continue
            free = node_group.allocatable()
            per_node = min(
                free.cpu_m // wants.cpu_m,
                free.memory_mib // max(wants.memory_mib, 1),
                free.gpus // wants.gpus if wants.gpus else 10**6,
            )
            used = per_node * wants.cpu_m / free.cpu_m
            if per_node and used < least:
                problems.append(
                    f"kuberay/{name}: worker group {group['groupName']!r} fits {per_node} per "
                    f"{node_group.instance_type} node and uses {used:.0%} of its CPU; size it from "
                    "nodes.share() so the nodes fill"
                )
    return problems


def token_problems(objects: Objects) -> list[str]:
    secrets: dict[str, set[str]] = {"RayJob": set(), "RayService": set()}
    problems = []
    for name, obj in _all(objects):
        cluster = ray_cluster(obj)
        if not cluster or obj["kind"] not in secrets:
            continue
        secret = (cluster.get("authOptions") or {}).get("secretName", "")
        role = "train" if obj["kind"] == "RayJob" else "serve"
        if not re.fullmatch(rf"raylife-ray-token-{role}-\d+", secret):
            problems.append(
                f"kuberay/{name}: token Secret {secret!r}; name it raylife-ray-token-{role}-<N>, a "
                "new N per rotation (the operator re-reads the Secret: rotate with a new cluster)"
            )
        secrets[obj["kind"]].add(secret)
    if secrets["RayJob"] & secrets["RayService"]:
        problems.append(
            "training and serving clusters share the token Secret "
            f"{sorted(secrets['RayJob'] & secrets['RayService'])}; give each its own"
        )
    return problems


WRITES = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}


def _statements_by_account(cluster_config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        a["metadata"]["name"]: a.get("attachPolicy", {}).get("Statement", [])
        for a in cluster_config["iam"]["serviceAccounts"]
    }


def _writable(statements: list[dict[str, Any]]) -> set[str]:
    """S3 resources a policy may write to."""
    out: set[str] = set()
    for s in statements:
        actions = {s["Action"]} if isinstance(s["Action"], str) else set(s["Action"])
        resources = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
        if s.get("Effect") == "Allow" and (actions & WRITES or "s3:*" in actions):
            out.update(resources)
    return out


def iam_problems(objects: Objects, cluster_config: dict[str, Any], bucket: str) -> list[str]:
    policies = _statements_by_account(cluster_config)
    problems = []
    for name, obj in _all(objects):
        for role, template in pod_templates(obj):
            account = template["spec"].get("serviceAccountName", "default")
            statements = policies.get(account)
            if statements is None:
                problems.append(
                    f"kuberay/{name}: {role}: service account {account!r} has no IRSA role in kuberay/eks/cluster.yaml"
                )
                continue
            writable = _writable(statements)
            if obj["kind"] == "RayService":
                beyond_logs = {r for r in writable if not r.endswith(f":::{bucket}/logs/*")}
                if beyond_logs:
                    problems.append(
                        f"kuberay/{name}: {role}: serving pods may write {sorted(beyond_logs)}; "
                        "give the RayService a read-only role (logs/ excepted)"
                    )
            elif obj["kind"] == "RayJob":
                actions = {
                    a
                    for s in statements
                    for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
                }
                if "s3:AbortMultipartUpload" not in actions:
                    problems.append(
                        f"kuberay/{name}: {role}: role of {account!r} lacks s3:AbortMultipartUpload "
                        "(multipart uploads of checkpoints); add it"
                    )
    return problems


APPLY_VERBS = ("kubectl apply", "kubectl delete", "eksctl ", "helm ", "aws iam", "bash ", "-f ")


def _make_targets_applying(makefile: str) -> dict[str, str]:
    """make target -> its recipe."""
    targets: dict[str, str] = {}
    current = None
    for line in makefile.splitlines():
        head = re.match(r"^([a-z][\w-]*):", line)
        if head:
            current = head.group(1)
            targets[current] = ""
        elif line.startswith("\t") and current:
            targets[current] += line + "\n"
    return targets


def applied_problems(root: Path) -> list[str]:
    """Every file under kuberay/ (but the image sources) is used by a documented command."""
    docs = (root / "docs" / "deploy-eks.md").read_text()
    targets = _make_targets_applying((root / "Makefile").read_text())
    documented = {t: r for t, r in targets.items() if f"make {t}" in docs}
    problems = []
    for path in sorted((root / "kuberay").rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.startswith("kuberay/docker/"):
            continue
        by_docs = any(
            rel in line and any(v in line for v in APPLY_VERBS) for line in docs.splitlines()
        )
        by_make = any(rel in recipe for recipe in documented.values())
        if not (by_docs or by_make):
            problems.append(
                f"{rel} is applied by no step of docs/deploy-eks.md and no make target it names; "
                "add the command (kubectl apply -f ...) or a documented make target"
            )
    return problems


def serving_problems(objects: Objects) -> list[str]:
    """HA, graceful stop, health checks and observability of the RayService."""
    service = _service(objects)
    cluster = service["spec"]["rayClusterConfig"]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    problems = []
    ft = cluster.get("gcsFaultToleranceOptions") or {}
    if not ft.get("redisAddress") or "valueFrom" not in (ft.get("redisPassword") or {}):
        problems.append(
            "RayService: no GCS fault tolerance with an external Redis whose password comes from a Secret"
        )
    # A budget keeps all but one of a group's minimum pods up; below 2 it would block drains.
    workers = [g["groupName"] for g in cluster["workerGroupSpecs"] if g["minReplicas"] >= 2]
    budgets = [o for _, o in _all(objects) if o.get("kind") == "PodDisruptionBudget"]
    covered = {b["spec"]["selector"]["matchLabels"].get("ray.io/group") for b in budgets}
    if set(workers) - covered:
        problems.append(
            f"RayService: worker groups {sorted(set(workers) - covered)} have no PodDisruptionBudget"
        )
    for group in cluster["workerGroupSpecs"]:
        if not group["template"]["spec"].get("topologySpreadConstraints"):
            problems.append(
                f"RayService: worker group {group['groupName']!r} has no topology spread"
            )
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            if app["name"] != "pool" and not deployment.get("max_replicas_per_node"):
                problems.append(
                    f"Serve app {app['name']!r}: no max_replicas_per_node (replicas may share a node)"
                )
    problems += _graceful_stop_problems(objects, service, config)
    problems += health_check_problems(objects)
    return problems


def _prestop_s(container: dict[str, Any]) -> int:
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    return int((hook.get("sleep") or {}).get("seconds", 0))


def _graceful_stop_problems(
    objects: Objects, service: dict[str, Any], config: dict[str, Any]
) -> list[str]:
    drain = max(
        d.get("graceful_shutdown_timeout_s", 20)
        for app in config["applications"]
        for d in app.get("deployments", [])
    )
    ingress = [o for _, o in _all(objects) if o.get("kind") == "Ingress"]
    attributes = (
        ingress[0]["metadata"]["annotations"].get(
            "alb.ingress.kubernetes.io/target-group-attributes", ""
        )
        if ingress
        else ""
    )
    found = re.search(r"deregistration_delay\.timeout_seconds=(\d+)", attributes)
    deregistration = int(found.group(1)) if found else 300  # the ALB's default
    problems = []
    for role, template in pod_templates(service):
        pod = template["spec"]
        [ray] = [c for c in pod["containers"] if c["name"].startswith("ray-")]
        prestop = _prestop_s(ray)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if prestop < deregistration:
            problems.append(
                f"RayService {role}: preStop sleep {prestop} s < the ALB deregistration delay "
                f"{deregistration} s; in-flight requests would hit a stopped proxy"
            )
        if grace < prestop + drain:
            problems.append(
                f"RayService {role}: terminationGracePeriodSeconds {grace} < preStop {prestop} s + "
                f"Serve graceful_shutdown_timeout_s {drain} s; raise it"
            )
    return problems


def observability_problems(objects: Objects) -> list[str]:
    problems = []
    monitors = [o for _, o in _all(objects) if o.get("kind") in ("PodMonitor", "ServiceMonitor")]
    if any(
        m["kind"] == "ServiceMonitor" and "head" in str(m["spec"]["selector"]) for m in monitors
    ):
        problems.append(
            "monitoring: a ServiceMonitor on head Services double-counts heads (RayService has two head Services); use a PodMonitor"
        )
    by_type = {
        m["spec"]["selector"]["matchLabels"].get("ray.io/node-type"): m
        for m in monitors
        if m["kind"] == "PodMonitor"
    }
    wanted = {"head": {"metrics", "as-metrics", "dash-metrics"}, "worker": {"metrics"}}
    for node_type, ports in wanted.items():
        monitor = by_type.get(node_type)
        endpoints = (monitor or {}).get("spec", {}).get("podMetricsEndpoints", [])
        if {e["port"] for e in endpoints} != ports:
            problems.append(
                f"monitoring: PodMonitor for {node_type} pods must scrape {sorted(ports)}"
            )
        for e in endpoints:
            labels = {r.get("targetLabel") for r in e.get("relabelings", [])}
            if "ray_io_cluster" not in labels:
                problems.append(
                    f"monitoring: {node_type} port {e['port']}: no ray_io_cluster label (Ray's dashboards filter on it)"
                )
    for name, obj in _all(objects):
        for role, template in pod_templates(obj):
            pod = template["spec"]
            if role == "submitter":
                continue
            if not any(
                c["name"] == "fluent-bit"
                and any(m["mountPath"] == "/tmp/ray" for m in c.get("volumeMounts", []))
                for c in pod["containers"]
            ):
                problems.append(
                    f"kuberay/{name}: {role}: no Fluent Bit sidecar shipping /tmp/ray logs off the pod"
                )
            if role == "head":
                [head] = [c for c in pod["containers"] if c["name"] == "ray-head"]
                names = {p["name"] for p in head.get("ports", [])}
                if not {"metrics", "as-metrics", "dash-metrics"} <= names:
                    problems.append(
                        f"kuberay/{name}: head declares no as-metrics / dash-metrics ports"
                    )
    return problems


def tracking_iam_problems(
    objects: Objects, cluster_config: dict[str, Any], bucket: str
) -> list[str]:
    """The tracking server's account has an IRSA role that writes its artifact prefix and nothing
    else of the bucket (the store stays the training role's)."""
    policies = _statements_by_account(cluster_config)
    problems = []
    for name, obj in _all(objects):
        if obj.get("kind") != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        account = pod.get("serviceAccountName", "default")
        args = " ".join(a for c in pod["containers"] for a in c.get("args", []))
        found = re.search(r"--artifacts-destination s3://([^/\s]+)/(\S+)", args)
        if account not in policies:
            problems.append(
                f"kuberay/{name}: service account {account!r} has no IRSA role in "
                "kuberay/eks/cluster.yaml; add one under iam.serviceAccounts"
            )
            continue
        if not found or found.group(1) != bucket:
            problems.append(
                f"kuberay/{name}: artifacts go nowhere in s3://{bucket}/; pass --artifacts-destination"
            )
            continue
        prefix = f"arn:aws:s3:::{bucket}/{found.group(2).rstrip('/')}/*"
        writable = _writable(policies[account])
        if writable != {prefix}:
            problems.append(
                f"kuberay/{name}: {account!r} may write {sorted(writable)}; allow exactly {prefix}"
            )
    return problems


def has_scale_subresource(crd: dict[str, Any], version: str = "v1") -> bool:
    """Whether a CustomResourceDefinition serves /scale for `version` (a PDB's owner needs it)."""
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return "scale" in (served.get("subresources") or {})
    return False


def volume_zone_problems(objects: Objects, cluster_config: dict[str, Any]) -> list[str]:
    """A pod on a zonal (EBS) ReadWriteOnce volume runs on a node group of that one zone: else after
    a node loss no autoscaler can promise a node where the volume is."""
    groups = {g["name"]: g for g in cluster_config.get("managedNodeGroups") or []}
    classes = {
        o["metadata"]["name"]: o for _, o in _all(objects) if o.get("kind") == "StorageClass"
    }
    claims = {
        o["metadata"]["name"]: o
        for _, o in _all(objects)
        if o.get("kind") == "PersistentVolumeClaim"
    }
    problems = []
    for name, obj in _all(objects):
        if obj.get("kind") != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            claim = claims.get((volume.get("persistentVolumeClaim") or {}).get("claimName", ""))
            storage = classes.get(((claim or {}).get("spec") or {}).get("storageClassName", ""))
            if not storage or storage.get("provisioner") != "ebs.csi.aws.com":
                continue
            selector = pod.get("nodeSelector") or {}
            chosen = [
                g
                for g in groups.values()
                if all((g.get("labels") or {}).get(k) == v for k, v in selector.items())
            ]
            zones = {z for g in chosen for z in g.get("availabilityZones") or ["(every zone)"]}
            allowed = {
                v
                for t in storage.get("allowedTopologies") or []
                for e in t.get("matchLabelExpressions") or []
                if e.get("key") == "topology.kubernetes.io/zone"
                for v in e.get("values") or []
            }
            where = f"kuberay/{name}: {obj['kind']} {obj['metadata']['name']}"
            if len(zones) != 1 or "(every zone)" in zones:
                problems.append(
                    f"{where}: its EBS volume is zonal, but its node groups "
                    f"{sorted(g['name'] for g in chosen)} span {sorted(zones)}: no autoscaler can "
                    "promise a node in the volume's zone; select a node group of one zone"
                )
            elif allowed != zones:
                problems.append(
                    f"{where}: StorageClass {storage['metadata']['name']} may make the volume in "
                    f"{sorted(allowed) or 'any zone'}, its node group lives in {sorted(zones)}; "
                    "set allowedTopologies to that zone"
                )
    return problems


def load(folder: Path) -> Objects:
    """The objects of every kuberay/*.yaml file (what `kubectl apply -f` would send)."""
    return {
        path.name: [o for o in yaml.safe_load_all(path.read_text()) if o]
        for path in sorted(folder.glob("*.yaml"))
    }
