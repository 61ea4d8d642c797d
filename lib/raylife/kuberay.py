"""KubeRay manifests for EKS, generated from one place so image, rayVersion, security and resources
never drift between files. `make kuberay-manifests` writes them to kuberay/; a test fails when the
committed files differ from what this module renders (the RayService embeds the rendered `eks` Serve
config, so a Serve config change without a regeneration fails too).

Files: namespace.yaml, ray-job.train-<model>.yaml (+ train-mnist-gpu), ray-job.tune-mnist.yaml,
ray-service.models.yaml, ingress.models.yaml, network-policy.yaml, monitoring.yaml.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from raylife import serve_config
from raylife.registry import MODEL_SPECS

RAY_VERSION = importlib.metadata.version("ray")
RAYLIFE_VERSION = importlib.metadata.version("raylife")
NAMESPACE = "raylife"
REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com/raylife"
"""Your ECR repository: `make kuberay-manifests REGISTRY=...` sets RAYLIFE_REGISTRY (docs/deploy-eks.md)."""
BUCKET = "raylife-artifacts"
SERVICE_ACCOUNT = "raylife"
TOKEN_SECRET = "raylife-ray-token"
PART_OF = {"app.kubernetes.io/part-of": "raylife"}
VPC_CIDR = "192.168.0.0/16"
"""eksctl's default VPC: where the ALB's targets traffic comes from (IP target mode)."""
SERVE_PORT = 8000
METRICS_PORT = 8080
STORAGE_ENV = {
    "RAYLIFE_STORE": f"s3://{BUCKET}/store",
    "RAYLIFE_RUNS": f"s3://{BUCKET}/runs",
}


def image(variant: str) -> str:
    """Pinned tag carrying both versions: <registry>:<raylife>-ray<ray>-<cpu|gpu>."""
    registry = os.environ.get("RAYLIFE_REGISTRY", REGISTRY)
    return f"{registry}:{RAYLIFE_VERSION}-ray{RAY_VERSION}-{variant}"


# --------------------------------------------------------------------------------------------------
# Pods: restricted Pod Security Standard, memory requests = limits


def _container(
    name: str, img: str, cpu: str, memory: str, gpus: int = 0, ports: list[dict] | None = None
) -> dict[str, Any]:
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu, "memory": memory},
    }
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
    container: dict[str, Any] = {
        "name": name,
        "image": img,
        "imagePullPolicy": "IfNotPresent",
        "resources": resources,
        "env": [{"name": k, "value": v} for k, v in STORAGE_ENV.items()],
        "securityContext": container_security(),
        "volumeMounts": [{"name": "ray-tmp", "mountPath": "/tmp/ray"}],
    }
    if ports:
        container["ports"] = ports
    if gpus:
        container["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
    return container


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod(containers: list[dict], node_group: str, gpu: bool = False) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "ray-tmp", "emptyDir": {}}]
    spec: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": {"raylife.io/node-group": node_group},
        "containers": containers,
        "volumes": volumes,
    }
    if gpu:
        # NCCL needs more shared memory than a container's default 64 MiB.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}})
        spec["tolerations"] = [
            {
                "key": "nvidia.com/gpu",
                "operator": "Equal",
                "value": "present",
                "effect": "NoSchedule",
            }
        ]
    return {"metadata": {"labels": dict(PART_OF)}, "spec": spec}


def _head(cpu: str = "2", memory: str = "8Gi") -> dict[str, Any]:
    ports = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
        {"containerPort": SERVE_PORT, "name": "serve"},
        {"containerPort": METRICS_PORT, "name": "metrics"},
    ]
    return {
        # num-cpus 0: the head runs Ray's control plane, no tasks or replicas.
        "rayStartParams": {"num-cpus": "0"},
        "template": _pod([_container("ray-head", image("cpu"), cpu, memory, ports=ports)], "cpu"),
    }


def _workers(gpu_group: bool, cpu_max: int, gpu_max: int) -> list[dict[str, Any]]:
    metrics = [{"containerPort": METRICS_PORT, "name": "metrics"}]
    groups = [
        {
            "groupName": "cpu",
            "replicas": 1,
            "minReplicas": 1,
            "maxReplicas": cpu_max,
            "rayStartParams": {},
            "template": _pod(
                [_container("ray-worker", image("cpu"), "4", "16Gi", ports=metrics)], "cpu"
            ),
        }
    ]
    if gpu_group:
        groups.append(
            {
                "groupName": "gpu",
                "replicas": 0,
                "minReplicas": 0,
                "maxReplicas": gpu_max,
                "rayStartParams": {},
                "template": _pod(
                    [_container("ray-worker", image("gpu"), "4", "16Gi", gpus=1, ports=metrics)],
                    "gpu",
                    gpu=True,
                ),
            }
        )
    return groups


def ray_cluster_spec(gpu_group: bool = False, cpu_max: int = 10, gpu_max: int = 2) -> dict:
    return {
        "rayVersion": RAY_VERSION,
        "authOptions": {"mode": "token", "secretName": TOKEN_SECRET},
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "version": "v2",
            "idleTimeoutSeconds": 120,
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"cpu": "500m", "memory": "512Mi"},
            },
            "securityContext": container_security(),
        },
        "headGroupSpec": _head(),
        "workerGroupSpecs": _workers(gpu_group, cpu_max, gpu_max),
    }


# --------------------------------------------------------------------------------------------------
# The objects


def _meta(name: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": {**PART_OF, **labels}}


def ray_job(variant: str, entrypoint: str, gpu: bool = False) -> dict[str, Any]:
    submitter = _pod([_container("ray-job-submitter", image("cpu"), "500m", "1Gi")], "cpu")
    submitter["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _meta(f"rayjob-{variant}"),
        "spec": {
            "entrypoint": entrypoint,
            # Code and dependencies are baked into the image: the runtime env only sets variables.
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": STORAGE_ENV}, sort_keys=True),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "activeDeadlineSeconds": 4 * 3600,
            "backoffLimit": 2,
            "submitterPodTemplate": submitter,
            "rayClusterSpec": ray_cluster_spec(gpu_group=gpu),
        },
    }


def training_jobs() -> dict[str, dict[str, Any]]:
    jobs = {
        f"ray-job.train-{model}.yaml": ray_job(
            f"train-{model}", f"python -m jobs.train --model {model} --num-workers 2 --promote"
        )
        for model in MODEL_SPECS
    }
    jobs["ray-job.train-mnist-gpu.yaml"] = ray_job(
        "train-mnist-gpu",
        "python -m jobs.train --model mnist --num-workers 2 --use-gpu --promote",
        gpu=True,
    )
    jobs["ray-job.tune-mnist.yaml"] = ray_job(
        "tune-mnist",
        "python -m jobs.tune --model mnist --samples 8 --max-concurrent 2 --promote",
    )
    return jobs


def ray_service() -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _meta("rayservice-models"),
        "spec": {
            # The rendered `eks` Serve config (serve_apps/config/base.yaml + eks.yaml), verbatim.
            "serveConfigV2": yaml.safe_dump(serve_config.render("eks"), sort_keys=False),
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterConfig": ray_cluster_spec(gpu_group=True, cpu_max=10, gpu_max=4),
        },
    }


def namespace() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                **PART_OF,
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


def ingress() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            **_meta("ingress-models"),
            "annotations": {
                "alb.ingress.kubernetes.io/scheme": "internet-facing",
                "alb.ingress.kubernetes.io/target-type": "ip",
                "alb.ingress.kubernetes.io/healthcheck-path": "/healthz",
            },
        },
        "spec": {
            "ingressClassName": "alb",
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    # KubeRay's Serve service for the RayService (only ready replicas).
                                    "service": {
                                        "name": "rayservice-models-serve-svc",
                                        "port": {"number": SERVE_PORT},
                                    }
                                },
                            }
                        ]
                    }
                }
            ],
        },
    }


def network_policy() -> dict[str, Any]:
    raylife_pods = {"podSelector": {"matchLabels": dict(PART_OF)}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("raylife-ray"),
        "spec": {
            "podSelector": {"matchLabels": dict(PART_OF)},
            "policyTypes": ["Ingress"],
            "ingress": [
                # Ray between its own pods: GCS, raylets, object transfers, workers (all ports).
                {"from": [raylife_pods]},
                # The Serve port from the ALB (IP targets: traffic arrives from the VPC).
                {
                    "from": [{"ipBlock": {"cidr": VPC_CIDR}}],
                    "ports": [{"protocol": "TCP", "port": SERVE_PORT}],
                },
                # The KubeRay operator: dashboard / Jobs API, and the Serve health checks.
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}
                            }
                        }
                    ],
                    "ports": [
                        {"protocol": "TCP", "port": 8265},
                        {"protocol": "TCP", "port": 52365},
                        {"protocol": "TCP", "port": SERVE_PORT},
                    ],
                },
                # Prometheus scraping Ray's metrics.
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                            }
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
                },
            ],
        },
    }


def _monitor(kind: str, name: str, selector: dict[str, str], endpoints_key: str) -> dict:
    """A Prometheus Operator monitor scraping the `metrics` port of the selected Ray pods."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": kind,
        "metadata": _meta(name, release="prometheus"),
        "spec": {
            "jobLabel": name,
            "namespaceSelector": {"matchNames": [NAMESPACE]},
            "selector": {"matchLabels": selector},
            endpoints_key: [{"port": "metrics"}],
        },
    }


def monitors() -> list[dict[str, Any]]:
    return [
        _monitor(
            "PodMonitor",
            "ray-workers",
            {"ray.io/node-type": "worker", **PART_OF},
            "podMetricsEndpoints",
        ),
        _monitor("ServiceMonitor", "ray-head", {"ray.io/node-type": "head"}, "endpoints"),
    ]


HEADER = (
    "# GENERATED by `make kuberay-manifests` (lib/raylife/kuberay.py). Do not edit: change the\n"
    "# generator or serve_apps/config and regenerate; a test fails when this file is stale.\n"
)


def manifests() -> dict[str, list[dict[str, Any]]]:
    """File name -> the objects it holds."""
    files: dict[str, list[dict[str, Any]]] = {"namespace.yaml": [namespace()]}
    files.update({name: [job] for name, job in training_jobs().items()})
    files["ray-service.models.yaml"] = [ray_service()]
    files["ingress.models.yaml"] = [ingress()]
    files["network-policy.yaml"] = [network_policy()]
    files["monitoring.yaml"] = monitors()
    return files


def render_text(objects: list[dict[str, Any]]) -> str:
    return HEADER + "---\n".join(yaml.safe_dump(obj, sort_keys=False) for obj in objects)


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, objects in manifests().items():
        path = folder / name
        path.write_text(render_text(objects))
        paths.append(path)
    return paths


def main() -> None:
    """python -m raylife.kuberay [FOLDER]: write the manifests (default: kuberay/)."""
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "kuberay")):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
