"""The MLflow tracking server of the EKS cluster (kuberay/mlflow.yaml): what the training RayJobs
log runs to (RAYLIFE_MLFLOW_URI) and the registry the store is mirrored into.

Backend store: SQLite on an EBS volume, one replica. A tracking server is not in the serving path
(the store is the source of truth; a server that dies mid-run does not fail a run), so one pod
that restarts in a minute is enough, and SQLite needs no database to create, pay for and keep
(an RDS PostgreSQL: ~0.03 USD/h plus its subnet group, security group and password Secret).
SQLite has one writer: hence `replicas: 1` and the Recreate strategy (a rolling update would
start a second server on the same file, and an EBS volume attaches to one node at a time). For
more than one replica, point --backend-store-uri at PostgreSQL (docs/deploy-eks.md says how).

Artifacts (run files, the registered MLflow Models) go to S3 through the server
(`--artifacts-destination`, proxied): only the server's IRSA role `raylife-mlflow` may write under
s3://<bucket>/mlflow/, and the RayJob pods need nothing but HTTP to the Service.

The image is raylife's own CPU image: its mlflow is the clients' (pinned in pyproject.toml and
constraints.txt, boto3 included), its tag names a commit, and the CPU nodes have it already.
"""

from __future__ import annotations

import dataclasses
from typing import Any

NAME = "mlflow"
"""Deployment, Service, PersistentVolumeClaim and NetworkPolicy."""
ACCOUNT = "raylife-mlflow"
"""IRSA service account (kuberay/eks/cluster.yaml): read and write s3://<bucket>/mlflow/ only."""
STORAGE_CLASS = "raylife-gp3"
PORT = 5000
DATA = "/mlflow"
"""Where the EBS volume holding mlflow.db is mounted."""
VOLUME_SIZE = "20Gi"
WORKERS = 2
"""uvicorn worker processes: the UI and the RayJobs' logging do not wait on each other."""
POD_LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "tracking-server"}
"""Not `app.kubernetes.io/part-of: raylife`: the namespace's NetworkPolicy admits every raylife
pod to every raylife pod; this one admits only the training pods (policy below)."""


@dataclasses.dataclass(frozen=True)
class Server:
    """What the generator (raylife.deploy.kuberay) decides for the server's objects."""

    image: str
    namespace: str
    bucket: str
    region: str
    labels: dict[str, str]
    """Labels of every object's metadata."""
    security: dict[str, Any]
    """The container security context of every raylife container (restricted standard)."""
    resources: dict[str, Any]
    clients: dict[str, Any]
    """Pod selector of the pods that may call the server (the training pods)."""
    node_selector: dict[str, str]
    """Selects a node group of one zone (an EBS volume attaches only in its own zone)."""
    zone: str
    """That node group's zone: the StorageClass makes the volume there."""

    def meta(self, name: str = NAME, namespaced: bool = True) -> dict[str, Any]:
        where = {"namespace": self.namespace} if namespaced else {}
        return {"name": name, **where, "labels": dict(self.labels)}


def uri(namespace: str) -> str:
    """RAYLIFE_MLFLOW_URI of the pods in the cluster: the Service's DNS name."""
    return f"http://{NAME}.{namespace}.svc:{PORT}"


def artifacts_destination(bucket: str) -> str:
    return f"s3://{bucket}/mlflow"


def objects(server: Server) -> list[dict[str, Any]]:
    """kuberay/mlflow.yaml: storage class, volume claim, Deployment, Service, NetworkPolicy."""
    return [
        storage_class(server),
        volume_claim(server),
        deployment(server),
        service(server),
        network_policy(server),
    ]


def storage_class(server: Server) -> dict[str, Any]:
    """gp3 through the EBS CSI driver (cluster.yaml's add-on). EKS marks no StorageClass default
    since Kubernetes 1.30, so the claim names this one."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": server.meta(STORAGE_CLASS, namespaced=False),
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"type": "gp3", "encrypted": "true"},
        # The volume is made in the zone of the node the pod lands on, and only in the zone of the
        # server's single-zone node group, whose Auto Scaling group replaces a lost node there.
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowedTopologies": [
            {
                "matchLabelExpressions": [
                    {"key": "topology.kubernetes.io/zone", "values": [server.zone]}
                ]
            }
        ],
        # The tracking database has no other copy: deleting the claim must not delete the volume.
        "reclaimPolicy": "Retain",
        "allowVolumeExpansion": True,
    }


def volume_claim(server: Server) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": server.meta(),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": STORAGE_CLASS,
            "resources": {"requests": {"storage": VOLUME_SIZE}},
        },
    }


def server_args(server: Server) -> list[str]:
    # Host headers the server answers (MLflow refuses others: DNS rebinding): the Service's
    # names for the pods, and loopback for `kubectl port-forward`. /health is exempt (probes).
    service = f"{NAME}.{server.namespace}.svc"
    hosts = [f"{service}:{PORT}", service, "localhost:*", "127.0.0.1:*"]
    return [
        "server",
        "--backend-store-uri",
        f"sqlite:///{DATA}/mlflow.db",
        "--artifacts-destination",
        artifacts_destination(server.bucket),
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--workers",
        str(WORKERS),
        "--allowed-hosts",
        ",".join(hosts),
    ]


def _probe(period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def container(server: Server) -> dict[str, Any]:
    env = {
        "AWS_DEFAULT_REGION": server.region,
        # No GenAI job runner: more processes, nothing raylife uses.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # The root filesystem is read-only: whatever wants a home directory gets /tmp.
        "HOME": "/tmp",
    }
    return {
        "name": NAME,
        "image": server.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["mlflow"],
        "args": server_args(server),
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"name": "http", "containerPort": PORT}],
        # The first start creates and migrates the database's tables (tens of seconds).
        "startupProbe": _probe(5, 36),
        "readinessProbe": _probe(10, 3),
        "livenessProbe": _probe(20, 3),
        "resources": server.resources,
        "securityContext": {**server.security, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "data", "mountPath": DATA},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def deployment(server: Server) -> dict[str, Any]:
    pod = {
        "serviceAccountName": ACCOUNT,
        # IRSA's web identity token comes in its own projected volume; the server never calls
        # the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "fsGroup": 1000,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": dict(server.node_selector),
        "containers": [container(server)],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": NAME}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": server.meta(),
        "spec": {
            "replicas": 1,  # SQLite: one writer (module docstring)
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": dict(POD_LABELS)},
            "template": {"metadata": {"labels": dict(POD_LABELS)}, "spec": pod},
        },
    }


def service(server: Server) -> dict[str, Any]:
    """Inside the cluster only: the server has no authentication (the UI: a port-forward)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": server.meta(),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(POD_LABELS),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def network_policy(server: Server) -> dict[str, Any]:
    """Only the training pods reach the server: it has no authentication, so whoever reaches it
    can move the `champion` alias, and the internet-facing serving replicas must not."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": server.meta(),
        "spec": {
            "podSelector": {"matchLabels": dict(POD_LABELS)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": server.clients}],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
        },
    }
