"""KubeRay manifests for EKS, generated from one place so image, rayVersion, security, pod sizes and
the Serve config never drift between files. `make kuberay-manifests` renders every file in memory,
checks it (`raylife.deploy.checks`: pods that fit no node, keep-alive below the ALB idle timeout,
mutable image tags, unpinned charts; node groups of unknown instance types) and writes nothing
unless all pass. A test fails when the committed files differ from what this module renders.

Files: namespace.yaml, network-policy.yaml, fluent-bit.yaml, mlflow.yaml (the tracking server:
`raylife.deploy.tracking_server`), ray-job.train-<model>.yaml (+ train-<model>-gpu for image models),
ray-job.tune-<model>.yaml, ray-job.batch-predict-<model>.yaml, ray-service.models.yaml, pdb.models.yaml, ingress.models.yaml,
monitoring.yaml, cron-job.monitor-<model>.yaml, cron-job.retrain-<model>.yaml (table models) +
rbac.scheduler.yaml (scheduled drift monitoring and retraining: `raylife.deploy.schedules`),
helm/install.sh.

Pod sizes come from the node groups of kuberay/eks/cluster.yaml and the instance table of
`raylife.deploy.nodes`; the torch/CUDA stack from `raylife.deploy.gpu_stack`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import yaml

from raylife.catalog.lookup import catalogue, model_names
from raylife.deploy import checks, deadlines, models_layer, nodes, schedules, tracking_server
from raylife.deploy import gpu_stack as stack
from raylife.errors import RaylifeError
from raylife.serve import config as serve_config
from raylife.settings import EXAMPLE_REGISTRY, Settings

RAY_VERSION = importlib.metadata.version("ray")
RAYLIFE_VERSION = importlib.metadata.version("raylife")
NAMESPACE = "raylife"
REGION = "us-west-2"
CLUSTER_NAME = "raylife"
REGISTRY = EXAMPLE_REGISTRY
"""The committed manifests' placeholder; yours: `make kuberay-manifests REGISTRY=...`."""
PLACEHOLDER_COMMIT = "000000000000"
"""The committed manifests name no real build; `make kuberay-manifests COMMIT=...` names yours."""
REDIS_ADDRESS = "rediss://master.raylife-gcs.xxxxxx.usw2.cache.amazonaws.com:6379"
"""The ElastiCache primary endpoint: `make kuberay-manifests REDIS_ADDRESS=...`."""
REDIS_SECRET = "raylife-redis"
BUCKET = "raylife-artifacts"
TRAIN_ACCOUNT = "raylife-train"
SERVE_ACCOUNT = "raylife-serve"
PART_OF = {"app.kubernetes.io/part-of": "raylife"}
SERVICE_LABEL = {"raylife.io/workload": "rayservice-models"}
VPC_CIDR = "192.168.0.0/16"
"""eksctl's default VPC: where the ALB's targets traffic comes from (IP target mode)."""
SERVE_PORT = 8000
METRICS_PORTS = {"metrics": 8080, "as-metrics": 44217, "dash-metrics": 44227}
"""Ray's node metrics, the autoscaler's and the dashboard's (Ray's defaults)."""
ALB_IDLE_TIMEOUT_S = 60
DEREGISTRATION_DELAY_S = 30
"""The ALB stops sending new requests to a deregistered pod and waits this long for open ones."""
WORKERS_PER_NODE = {"cpu": 2, "gpu": 1}
FLUENT_BIT_IMAGE = "fluent/fluent-bit:4.2.2"
"""The log sidecar on Docker Hub; pods pull it through the ECR pull-through cache (`docker-hub/`
prefix of the registry's host, docs/deploy-eks.md step 4), by digest."""
FLUENT_BIT_DIGEST = "sha256:" + "0" * 64
"""The digest of FLUENT_BIT_IMAGE's multi-arch index: the same in the cache as on Docker Hub. Look
it up once (`docker buildx imagetools inspect fluent/fluent-bit:4.2.2`), set it here, regenerate;
`make eks-preflight` refuses this all-zero placeholder."""
PULL_THROUGH_PREFIX = "docker-hub"
RAY_LOGS_VOLUME = "ray-logs"
"""KubeRay's own name for the volume at /tmp/ray (RayLogVolumeName): the autoscaler container it
adds to the head mounts the pod's volume of that name, so its logs land where Fluent Bit reads."""
REDIS_CA_CERT = "/etc/ssl/certs/ca-certificates.crt"
"""The CA bundle of the rayproject/ray images (Ubuntu's ca-certificates, Amazon's roots included):
the GCS's Redis client (hiredis) verifies ElastiCache's TLS certificate against it. Unset, hiredis
falls back to the default locations compiled into the TLS library Ray's wheel links, not
necessarily the image's (docs/deploy-eks.md step 8)."""
FLUENT_BIT = nodes.Resources(100, 128)
HEAD = nodes.Resources(2000, 8192)
SUBMITTER = nodes.Resources(500, 1024)
AUTOSCALER = nodes.Resources(500, 512)
STORAGE_ENV = {
    "RAYLIFE_STORE": f"s3://{BUCKET}/store",
    "RAYLIFE_RUNS": f"s3://{BUCKET}/runs",
}
TRAINING_ENV = {**STORAGE_ENV, "RAYLIFE_MLFLOW_URI": tracking_server.uri(NAMESPACE)}
"""The RayJobs' runtime env: runs are tracked by the cluster's MLflow server (kuberay/mlflow.yaml),
which must be up before a job starts (an unreachable one stops the run before training)."""
MLFLOW = nodes.Resources(500, 1536)
KUBECTL = nodes.Resources(100, 128)
TRACKING_GROUP = "tracking"
"""The MLflow server's node group (kuberay/eks/cluster.yaml): one zone, like its EBS volume."""


@dataclasses.dataclass(frozen=True)
class Chart:
    """A Helm chart the guide installs, pinned."""

    repo: str
    url: str
    version: str
    namespace: str
    flags: tuple[str, ...] = ()


CHARTS: dict[str, Chart] = {
    "cluster-autoscaler": Chart(
        "autoscaler",
        "https://kubernetes.github.io/autoscaler",
        "9.59.0",
        "kube-system",
        (
            f"--set autoDiscovery.clusterName={CLUSTER_NAME} --set awsRegion={REGION}",
            "--set image.tag=v1.35.0 --set fullnameOverride=cluster-autoscaler",
            "--set rbac.serviceAccount.create=false --set rbac.serviceAccount.name=cluster-autoscaler",
            '--set nodeSelector."raylife\\.io/node-group"=cpu',
        ),
    ),
    "aws-load-balancer-controller": Chart(
        "eks",
        "https://aws.github.io/eks-charts",
        "1.14.1",
        "kube-system",
        (
            f"--set clusterName={CLUSTER_NAME} --set region={REGION}",
            f'--set vpcId="$(aws eks describe-cluster --name {CLUSTER_NAME} '
            '--query cluster.resourcesVpcConfig.vpcId --output text)"',
            "--set serviceAccount.create=false --set serviceAccount.name=aws-load-balancer-controller",
        ),
    ),
    "kuberay-operator": Chart(
        "kuberay",
        "https://ray-project.github.io/kuberay-helm/",
        "1.7.0",
        "kuberay-system",
        ("--create-namespace -f kuberay/helm/kuberay-operator.values.yaml",),
    ),
    "kube-prometheus-stack": Chart(
        "prometheus-community",
        "https://prometheus-community.github.io/helm-charts",
        "79.12.0",
        "monitoring",
        ("--create-namespace",),
    ),
}
RELEASES = {"kube-prometheus-stack": "prometheus"}
"""Helm release names that differ from the chart's ("prometheus": what the monitors select)."""


@dataclasses.dataclass(frozen=True)
class Site:
    """What differs per deployment: the generator's inputs besides the code."""

    cluster_config: dict[str, Any]
    """kuberay/eks/cluster.yaml: the node groups pods are sized for."""
    registry: str = REGISTRY
    """The ECR repository (load_site's default: RAYLIFE_REGISTRY, through raylife.settings)."""
    commit: str = PLACEHOLDER_COMMIT
    """The git commit the images are built from (12 hex digits): their tag, never reused."""
    redis_address: str = REDIS_ADDRESS
    fluent_bit_digest: str = FLUENT_BIT_DIGEST
    """Digest of the log sidecar's image (FLUENT_BIT_IMAGE) as the pull-through cache serves it."""
    train_token: int = 1
    """Rotation number of the training clusters' token Secret raylife-ray-token-train-<N>."""
    serve_token: int = 1
    """Rotation number of the serving cluster's token Secret raylife-ray-token-serve-<N>."""
    alb_idle_timeout_s: int = ALB_IDLE_TIMEOUT_S
    models_suffix: str = ""
    """`-m<digest>` of the team's models layer (raylife.deploy.models_layer), or nothing."""
    kubectl_digest: str = ""
    """`sha256:...` of the scheduler's kubectl image, or nothing (its release tag is immutable)."""
    monitor_schedule: str = schedules.MONITOR_SCHEDULE
    """When each model's drift monitor runs (cron syntax, UTC): kuberay/cron-job.monitor-*.yaml."""
    retrain_schedule: str = schedules.RETRAIN_SCHEDULE
    """When each table model retrains if drifted (cron syntax, UTC): cron-job.retrain-*.yaml."""

    def groups(self) -> dict[str, nodes.NodeGroup]:
        return nodes.node_groups(self.cluster_config)


def load_site(folder: Path = Path("kuberay"), **overrides: Any) -> Site:
    path = folder / "eks" / "cluster.yaml"
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RaylifeError(f"{path} not found; run from the repository root") from None
    given = {k: v for k, v in overrides.items() if v is not None}
    given.setdefault("registry", Settings.from_env().image_registry)
    given.setdefault("models_suffix", models_layer.tag_suffix())
    return Site(cluster_config=config, **given)


def image(site: Site, variant: str) -> str:
    """<registry>:<raylife>-ray<ray>-g<commit>-<cpu|gpu>[-m<models digest>]: one tag per build,
    never overwritten (the suffix: the team's models layer on top, raylife.deploy.models_layer)."""
    base = f"{site.registry}:{RAYLIFE_VERSION}-ray{RAY_VERSION}-g{site.commit}-{variant}"
    return base + site.models_suffix


# --------------------------------------------------------------------------------------------------
# Pods: restricted Pod Security Standard, memory requests = limits, sized from the node table


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(size: nodes.Resources) -> dict[str, dict[str, str]]:
    amounts = {"cpu": f"{size.cpu_m}m", "memory": f"{size.memory_mib}Mi"}
    if size.gpus:
        amounts["nvidia.com/gpu"] = str(size.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _container(name: str, img: str, size: nodes.Resources, ports: dict[str, int]) -> dict:
    container: dict[str, Any] = {
        "name": name,
        "image": img,
        # Safe with immutable, commit-named tags: a tag never points at other code.
        "imagePullPolicy": "IfNotPresent",
        "resources": _resources(size),
        "env": [{"name": k, "value": v} for k, v in STORAGE_ENV.items()],
        "securityContext": container_security(),
        "volumeMounts": [{"name": RAY_LOGS_VOLUME, "mountPath": "/tmp/ray"}],
    }
    if ports:
        container["ports"] = [{"containerPort": p, "name": n} for n, p in ports.items()]
    if size.gpus:
        container["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
    return container


def _pulled_through(site: Site, prefix: str, image: str, digest: str) -> str:
    """A third-party image as the nodes pull it: through the ECR pull-through cache of the images'
    registry (rule `prefix`), by digest when one is given."""
    host = site.registry.split("/", 1)[0]
    return f"{host}/{prefix}/{image}" + (f"@{digest}" if digest else "")


def fluent_bit_image(site: Site) -> str:
    """<registry host>/docker-hub/fluent/fluent-bit:<tag>@<digest>: cached in ECR, immutable."""
    return _pulled_through(site, PULL_THROUGH_PREFIX, FLUENT_BIT_IMAGE, site.fluent_bit_digest)


def kubectl_image(site: Site) -> str:
    """<registry host>/k8s/kubectl:<release>[@<digest>]: the scheduler's, registry.k8s.io's own."""
    return _pulled_through(
        site, schedules.PULL_THROUGH_PREFIX, schedules.KUBECTL_IMAGE, site.kubectl_digest
    )


def _fluent_bit(site: Site, prestop_s: int) -> dict[str, Any]:
    """Ships the pod's Ray logs to S3, so they outlive the pod (KubeRay's sidecar pattern)."""
    field = {
        "POD_NAME": "metadata.name",
        "RAY_CLUSTER": "metadata.labels['ray.io/cluster']",
    }
    container: dict[str, Any] = {
        "name": "fluent-bit",
        "image": fluent_bit_image(site),
        "imagePullPolicy": "IfNotPresent",
        "resources": _resources(FLUENT_BIT),
        "env": [
            {"name": "AWS_REGION", "value": REGION},
            *({"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in field.items()),
        ],
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": RAY_LOGS_VOLUME, "mountPath": "/tmp/ray", "readOnly": True},
            {"name": "fluent-bit-config", "mountPath": "/fluent-bit/etc/"},
            {"name": "fluent-bit-state", "mountPath": "/tmp/fluent-bit"},
        ],
    }
    if prestop_s:
        # Keep tailing while the Ray container drains; it flushes on SIGTERM afterwards.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": prestop_s}}}
    return container


@dataclasses.dataclass(frozen=True)
class Stop:
    """How a pod stops: a preStop pause while the ALB deregisters it, then Serve's drain."""

    prestop_s: int = 0
    grace_s: int = 0


def _pod(
    containers: list[dict],
    node_group: str,
    account: str,
    stop: Stop,
    labels: dict[str, str],
    api_token: bool = False,
) -> dict[str, Any]:
    """`api_token`: mount the service account's Kubernetes API token. Only the head needs it (the
    autoscaler container KubeRay adds there patches pods and the RayCluster, through a Role that
    KubeRay binds to the head's account); workers and submitters share that account for its IRSA
    role, so they must not carry the token (IRSA's own web identity token is mounted regardless)."""
    volumes: list[dict[str, Any]] = [{"name": RAY_LOGS_VOLUME, "emptyDir": {}}]
    if any(c["name"] == "fluent-bit" for c in containers):
        volumes += [
            {"name": "fluent-bit-config", "configMap": {"name": "fluent-bit-ray"}},
            {"name": "fluent-bit-state", "emptyDir": {}},
        ]
    spec: dict[str, Any] = {
        "serviceAccountName": account,
        "automountServiceAccountToken": api_token,
        "securityContext": pod_security(),
        "nodeSelector": {nodes.NODE_GROUP_LABEL: node_group},
        "containers": containers,
        "volumes": volumes,
    }
    if stop.grace_s:
        spec["terminationGracePeriodSeconds"] = stop.grace_s
    if any("nvidia.com/gpu" in c["resources"]["limits"] for c in containers):
        # NCCL needs more shared memory than a container's default 64 MiB.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}})
        spec["nodeSelector"]["raylife.io/cuda"] = stack.CUDA_VERSION
        spec["tolerations"] = [
            {
                "key": "nvidia.com/gpu",
                "operator": "Equal",
                "value": "present",
                "effect": "NoSchedule",
            }
        ]
    return {"metadata": {"labels": {**PART_OF, **labels}}, "spec": spec}


def _with_prestop(container: dict[str, Any], stop: Stop) -> dict[str, Any]:
    if stop.prestop_s:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": stop.prestop_s}}}
    return container


def _head(site: Site, account: str, stop: Stop, labels: dict[str, str]) -> dict[str, Any]:
    ports = {"gcs": 6379, "dashboard": 8265, "client": 10001, "serve": SERVE_PORT, **METRICS_PORTS}
    head = _with_prestop(_container("ray-head", image(site, "cpu"), HEAD, ports), stop)
    # Ray's dashboard embeds the Grafana panels of the kube-prometheus-stack release.
    head["env"] += [
        {"name": "RAY_REDIS_CA_CERT", "value": REDIS_CA_CERT},
        {"name": "RAY_GRAFANA_HOST", "value": "http://prometheus-grafana.monitoring.svc:80"},
        {
            "name": "RAY_PROMETHEUS_HOST",
            "value": "http://prometheus-kube-prometheus-prometheus.monitoring.svc:9090",
        },
    ]
    containers = [head, _fluent_bit(site, stop.prestop_s + _drain_s() if stop.prestop_s else 0)]
    return {
        # num-cpus 0: the head runs Ray's control plane, no tasks or replicas.
        "rayStartParams": {"num-cpus": "0"},
        "template": _pod(containers, "cpu", account, stop, labels, api_token=True),
    }


def worker_size(site: Site, group: str) -> nodes.Resources:
    """The Ray container of a `group` worker: WORKERS_PER_NODE of them (with sidecars) fill a node."""
    node_group = site.groups()[group]
    return nodes.share(
        node_group.instance_type, WORKERS_PER_NODE[group], FLUENT_BIT, node_group.max_pods
    )


def _worker_group(
    site: Site, group: str, replicas: int, max_replicas: int, account: str, stop: Stop, labels: dict
) -> dict[str, Any]:
    size = worker_size(site, group)
    variant = "gpu" if size.gpus else "cpu"
    ray = _with_prestop(
        _container("ray-worker", image(site, variant), size, {"metrics": 8080}), stop
    )
    pod = _pod(
        [ray, _fluent_bit(site, stop.prestop_s + _drain_s() if stop.prestop_s else 0)],
        group,
        account,
        stop,
        labels,
    )
    if labels:  # the serving cluster: spread each group's pods over nodes and zones
        selector = {"matchLabels": {**labels, "ray.io/group": group}}
        pod["spec"]["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": selector,
                # During an upgrade two Ray clusters share the labels: spread each on its own.
                "matchLabelKeys": ["ray.io/cluster"],
            }
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
        ]
    return {
        "groupName": group,
        "replicas": replicas,
        "minReplicas": replicas,
        "maxReplicas": max_replicas,
        # Whole cores for Ray's scheduler; the fraction left runs raylet, proxy and agents.
        "rayStartParams": {"num-cpus": str(size.cpu_m // 1000)},
        "template": pod,
    }


def ray_cluster_spec(
    site: Site,
    account: str,
    token_secret: str,
    gpu_group: bool = False,
    cpu_replicas: tuple[int, int] = (1, 10),
    gpu_max: int = 2,
    stop: Stop = Stop(),
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = labels or {}
    groups = [_worker_group(site, "cpu", *cpu_replicas, account, stop, labels)]
    if gpu_group:
        groups.append(_worker_group(site, "gpu", 0, gpu_max, account, stop, labels))
    return {
        "rayVersion": RAY_VERSION,
        "authOptions": {"mode": "token", "secretName": token_secret},
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "version": "v2",
            "idleTimeoutSeconds": 120,
            "resources": _resources(AUTOSCALER),
            "securityContext": container_security(),
        },
        "headGroupSpec": _head(site, account, stop, labels),
        "workerGroupSpecs": groups,
    }


# --------------------------------------------------------------------------------------------------
# The objects


def _meta(name: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": {**PART_OF, **labels}}


def train_token_secret(site: Site) -> str:
    return f"raylife-ray-token-train-{site.train_token}"


def serve_token_secret(site: Site) -> str:
    return f"raylife-ray-token-serve-{site.serve_token}"


def ray_job(
    site: Site,
    variant: str,
    entrypoint: str,
    budget: deadlines.JobBudget,
    gpu: bool = False,
    cpu_replicas: tuple[int, int] = (1, 10),
    retries: int = 2,
) -> dict[str, Any]:
    submitter = _pod(
        [_container("ray-job-submitter", image(site, "cpu"), SUBMITTER, {})],
        "cpu",
        TRAIN_ACCOUNT,
        Stop(),
        {},
    )
    submitter["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            **_meta(f"rayjob-{variant}"),
            "annotations": {deadlines.ANNOTATION: budget.annotation()},
        },
        "spec": {
            "entrypoint": entrypoint,
            # Code and dependencies are baked into the image: the runtime env only sets variables.
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": TRAINING_ENV}, sort_keys=True),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            # One attempt (KubeRay restarts the count on retry): see raylife.deploy.deadlines.
            "activeDeadlineSeconds": budget.deadline_s,
            "backoffLimit": retries,
            "submitterPodTemplate": submitter,
            "rayClusterSpec": ray_cluster_spec(
                site,
                TRAIN_ACCOUNT,
                train_token_secret(site),
                gpu_group=gpu,
                cpu_replicas=cpu_replicas,
            ),
        },
    }


def training_jobs(site: Site) -> dict[str, dict[str, Any]]:
    jobs = {
        f"ray-job.train-{model}.yaml": ray_job(
            site,
            f"train-{model}",
            f"python -m jobs.train --model {model} --num-workers 2 --promote",
            deadlines.budget_for("train"),
        )
        for model in model_names()
    }
    for spec in catalogue().values():
        if spec.input_kind == "image":  # image models also train on the GPU node group
            jobs[f"ray-job.train-{spec.name}-gpu.yaml"] = ray_job(
                site,
                f"train-{spec.name}-gpu",
                f"python -m jobs.train --model {spec.name} --num-workers 2 --use-gpu --promote",
                deadlines.budget_for("train"),
                gpu=True,
            )
        jobs[f"ray-job.tune-{spec.name}.yaml"] = ray_job(
            site,
            f"tune-{spec.name}",
            f"python -m jobs.tune --model {spec.name} --samples 8 --max-concurrent 2 --promote",
            deadlines.budget_for("tune"),
        )
    return jobs


def batch_predict_jobs(site: Site) -> dict[str, dict[str, Any]]:
    """ray-job.batch-predict-<model>.yaml: the promoted version over s3://<bucket>/batch/<model>/
    into s3://<bucket>/predictions/<model>/ (refused when complete: edit --output, or add
    --overwrite, to run again)."""
    return {
        f"ray-job.batch-predict-{model}.yaml": ray_job(
            site,
            f"batch-predict-{model}",
            f"python -m jobs.batch_predict --model {model} --input s3://{BUCKET}/batch/{model}/ "
            f"--output s3://{BUCKET}/predictions/{model}/ --actors 4",
            deadlines.budget_for("batch-predict"),
        )
        for model in model_names()
    }


MONITOR_BUDGET = deadlines.JobBudget(work_s=10 * 60, stall_s=deadlines.worker_stall_s(), failures=0)
"""A drift check reads one window of captures: minutes. No in-job recovery (no Ray Train), so the
deadline is the cluster's start plus the work, 25 minutes: shorter than an hourly schedule's
period, so one model's runs never overlap."""


def _scheduled(site: Site, variant: str, cron: str, rayjob: dict[str, Any]) -> list[dict]:
    """cron-job.<variant>.yaml: `rayjob` created anew on `cron` by the scheduler's kubectl pod."""
    schedule = schedules.Schedule(
        name=variant,
        cron=cron,
        rayjob=rayjob,
        kubectl_image=kubectl_image(site),
        namespace=NAMESPACE,
        labels=dict(PART_OF),
        security=container_security(),
        pod_security=pod_security(),
        resources=_resources(KUBECTL),
        node_selector={nodes.NODE_GROUP_LABEL: "cpu"},
    )
    return schedules.objects(schedule)


def monitor_jobs(site: Site) -> dict[str, list[dict[str, Any]]]:
    """cron-job.monitor-<model>.yaml: `raylife monitor <model>` on `site.monitor_schedule`, as a
    RayJob created anew each run (raylife.deploy.schedules), on a cluster of at most one worker.
    backoffLimit 0: exit 3 (drift found) fails the Ray job, and a retry would build a new cluster
    to write the same report again; the next scheduled run is the retry."""
    return {
        f"cron-job.monitor-{model}.yaml": _scheduled(
            site,
            f"monitor-{model}",
            site.monitor_schedule,
            ray_job(
                site,
                f"monitor-{model}",
                schedules.monitor_entrypoint(model),
                MONITOR_BUDGET,
                cpu_replicas=(0, 1),
                retries=0,
            ),
        )
        for model in model_names()
    }


RETRAIN_BUDGET = deadlines.budget_for("tune")
"""A retrain is a sweep (4 trials by default, the tune job runs 8) plus reading the table and
judging the winner: the tune job's budget, with the sweep driver's stall allowance."""


def retrain_jobs(site: Site) -> dict[str, list[dict[str, Any]]]:
    """cron-job.retrain-<model>.yaml, per table model (`raylife retrain` takes no image model):
    `raylife retrain <model> --when-drifted` on `site.retrain_schedule`, on a cluster sized like
    the tune job's. backoffLimit 0: a refusal exits 0, and bad input (exit 2: no monitor report, too
    few captured rows with feedback) fails the same way again; the next day's run is the retry."""
    return {
        f"cron-job.retrain-{spec.name}.yaml": _scheduled(
            site,
            f"retrain-{spec.name}",
            site.retrain_schedule,
            ray_job(
                site,
                f"retrain-{spec.name}",
                schedules.retrain_entrypoint(spec.name),
                RETRAIN_BUDGET,
                retries=0,
            ),
        )
        for spec in catalogue().values()
        if spec.input_kind != "image"
    }


def _drain_s() -> int:
    """The longest Serve graceful shutdown of the eks config: what a stopping replica may take."""
    config = serve_config.render("eks")
    return max(
        int(d.get("graceful_shutdown_timeout_s", 20))
        for app in config["applications"]
        for d in app.get("deployments", [])
    )


def serving_stop() -> Stop:
    prestop = DEREGISTRATION_DELAY_S
    return Stop(prestop_s=prestop, grace_s=prestop + _drain_s() + 10)


def ray_service(site: Site) -> dict[str, Any]:
    cluster = ray_cluster_spec(
        site,
        SERVE_ACCOUNT,
        serve_token_secret(site),
        gpu_group=True,
        cpu_replicas=(2, 10),
        gpu_max=4,
        stop=serving_stop(),
        labels=SERVICE_LABEL,
    )
    # GCS fault tolerance: the head's state lives in Redis, so a new head resumes the same Serve
    # applications while the replicas on the workers keep answering.
    cluster["gcsFaultToleranceOptions"] = {
        "redisAddress": site.redis_address,
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": REDIS_SECRET, "key": "password"}}},
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _meta("rayservice-models"),
        "spec": {
            # The rendered `eks` Serve config (serve_apps/config/base.yaml + eks.yaml), verbatim.
            "serveConfigV2": yaml.safe_dump(serve_config.render("eks"), sort_keys=False),
            "upgradeStrategy": {"type": "NewCluster"},
            # The head holds the autoscaler's Kubernetes token and no replica (num-cpus 0): keep it
            # out of the Serve Service, so the ALB never sends it internet traffic.
            "excludeHeadPodFromServeSvc": True,
            "rayClusterConfig": cluster,
        },
    }


def _single_zone(site: Site, group: str) -> str:
    """The one zone of node group `group`; a group spanning zones cannot host a zonal volume."""
    [config] = [
        g for g in site.cluster_config.get("managedNodeGroups") or [] if g["name"] == group
    ][:1] or [{}]
    zones = config.get("availabilityZones") or []
    if len(zones) != 1:
        raise RaylifeError(
            f"kuberay/eks/cluster.yaml: node group {group!r} has availabilityZones {zones}; the "
            "MLflow server's EBS volume attaches in one zone only: give the group exactly one"
        )
    return str(zones[0])


def mlflow_server(site: Site) -> list[dict[str, Any]]:
    """kuberay/mlflow.yaml: the tracking server the RayJobs log to (raylife.deploy.tracking_server)."""
    training_pods = {
        "matchLabels": dict(PART_OF),
        # The serving pods carry SERVICE_LABEL; the RayJobs' pods do not.
        "matchExpressions": [{"key": k, "operator": "DoesNotExist"} for k in SERVICE_LABEL],
    }
    server = tracking_server.Server(
        image=image(site, "cpu"),
        namespace=NAMESPACE,
        bucket=BUCKET,
        region=REGION,
        labels=dict(PART_OF),
        security=container_security(),
        resources=_resources(MLFLOW),
        clients=training_pods,
        node_selector={nodes.NODE_GROUP_LABEL: TRACKING_GROUP},
        zone=_single_zone(site, TRACKING_GROUP),
    )
    return tracking_server.objects(server)


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


def ingress(site: Site) -> dict[str, Any]:
    alb = "alb.ingress.kubernetes.io"
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            **_meta("ingress-models"),
            "annotations": {
                f"{alb}/scheme": "internet-facing",
                f"{alb}/target-type": "ip",
                # What each Serve proxy answers by itself (200 unless it drains): a target's health
                # is its own. /readyz would be one global signal, answered by the pool app
                # at / (one restarting replica anywhere would fail every target at once).
                f"{alb}/healthcheck-path": checks.PROXY_HEALTH_PATH,
                f"{alb}/healthcheck-interval-seconds": "10",
                f"{alb}/healthy-threshold-count": "2",
                f"{alb}/unhealthy-threshold-count": "3",
                f"{alb}/success-codes": "200",
                # Serve's keep-alive (serve_apps/config/eks.yaml) must outlast this.
                f"{alb}/load-balancer-attributes": (
                    f"idle_timeout.timeout_seconds={site.alb_idle_timeout_s}"
                ),
                f"{alb}/target-group-attributes": (
                    f"deregistration_delay.timeout_seconds={DEREGISTRATION_DELAY_S}"
                ),
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


def _from_namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


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
                    "from": [_from_namespace("kuberay-system")],
                    "ports": [
                        {"protocol": "TCP", "port": 8265},
                        {"protocol": "TCP", "port": 52365},
                        {"protocol": "TCP", "port": SERVE_PORT},
                    ],
                },
                # Prometheus scraping Ray's, the autoscaler's and the dashboard's metrics.
                {
                    "from": [_from_namespace("monitoring")],
                    "ports": [{"protocol": "TCP", "port": p} for p in METRICS_PORTS.values()],
                },
            ],
        },
    }


LOG_PATHS = ("/tmp/ray/session_latest/logs/*", "/tmp/ray/session_latest/logs/*/*")
"""Fluent Bit's tail globs are not recursive: Ray writes the logs of its processes in logs/, and
those of Serve (controller, proxies, replicas and their access lines), events, Ray Data and the
dead workers' (old/) one folder down."""


def fluent_bit_config() -> dict[str, Any]:
    """Tail every Ray log file of the pod; upload to s3://<bucket>/logs/<cluster>/<pod>/."""
    conf = "\n".join(
        [
            "[SERVICE]",
            "    Flush            5",
            "    Grace            5",
            "    Log_Level        warn",
            "[INPUT]",
            "    Name             tail",
            f"    Path             {','.join(LOG_PATHS)}",
            "    Path_Key         file",
            "    Tag              ray",
            "    DB               /tmp/fluent-bit/tail.db",
            # A file found by a later scan (a replica started after the sidecar) is read from its
            # first line, not its end; the DB keeps a restarted sidecar from shipping it twice.
            "    Read_from_Head   On",
            "    Refresh_Interval 5",
            "    Skip_Long_Lines  On",
            "[OUTPUT]",
            "    Name             s3",
            "    Match            *",
            f"    bucket           {BUCKET}",
            "    region           ${AWS_REGION}",
            "    store_dir        /tmp/fluent-bit/s3",
            "    total_file_size  16M",
            "    upload_timeout   1m",
            "    compression      gzip",
            "    s3_key_format    /logs/${RAY_CLUSTER}/${POD_NAME}/%Y%m%d-%H%M%S-$UUID.jsonl.gz",
            "",
        ]
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("fluent-bit-ray"),
        "data": {"fluent-bit.conf": conf},
    }


def disruption_budgets(site: Site) -> list[dict[str, Any]]:
    """Node drains keep all but one of a serving worker group's minimum pods up.

    The pods' owner is a RayCluster, whose CRD has no `scale` subresource: Kubernetes then honours
    only an integer `minAvailable` (for `maxUnavailable` or a percentage it cannot count the
    expected pods and allows no disruption at all, so every drain would hang). minAvailable is the
    group's minReplicas - 1: a drain at the minimum evicts one pod at a time. A group whose
    minimum is below 2 gets no budget (one would block every drain of its node)."""
    groups = ray_service(site)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return [
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(f"rayservice-models-{group['groupName']}"),
            "spec": {
                "minAvailable": group["minReplicas"] - 1,
                "selector": {"matchLabels": {**SERVICE_LABEL, "ray.io/group": group["groupName"]}},
            },
        }
        for group in groups
        if group["minReplicas"] >= 2
    ]


def _pod_monitor(node_type: str, ports: list[str]) -> dict[str, Any]:
    """KubeRay's PodMonitor shape: each endpoint labels its series with ray_io_cluster."""
    relabel = {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
        "targetLabel": "ray_io_cluster",
    }
    name = f"ray-{node_type}s" if node_type == "worker" else "ray-head"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _meta(f"{name}-monitor", release="prometheus"),
        "spec": {
            "jobLabel": name,
            "namespaceSelector": {"matchNames": [NAMESPACE]},
            "selector": {"matchLabels": {"ray.io/node-type": node_type}},
            "podMetricsEndpoints": [{"port": p, "relabelings": [dict(relabel)]} for p in ports],
        },
    }


def monitors() -> list[dict[str, Any]]:
    # PodMonitors, not a ServiceMonitor: a RayService has two Services in front of its head.
    return [_pod_monitor("head", list(METRICS_PORTS)), _pod_monitor("worker", ["metrics"])]


HEADER = (
    "# GENERATED by `make kuberay-manifests` (lib/raylife/deploy/kuberay.py). Do not edit: change the\n"
    "# generator or serve_apps/config and regenerate; a test fails when this file is stale.\n"
)


def manifests(site: Site | None = None) -> dict[str, list[dict[str, Any]]]:
    """File name -> the objects it holds."""
    site = site or load_site()
    files: dict[str, list[dict[str, Any]]] = {"namespace.yaml": [namespace()]}
    files["network-policy.yaml"] = [network_policy()]
    files["fluent-bit.yaml"] = [fluent_bit_config()]
    files["mlflow.yaml"] = mlflow_server(site)
    files.update({name: [job] for name, job in training_jobs(site).items()})
    files.update({name: [job] for name, job in batch_predict_jobs(site).items()})
    files["ray-service.models.yaml"] = [ray_service(site)]
    files["pdb.models.yaml"] = disruption_budgets(site)
    files["ingress.models.yaml"] = [ingress(site)]
    files["monitoring.yaml"] = monitors()
    files.update(monitor_jobs(site))
    files.update(retrain_jobs(site))
    files["rbac.scheduler.yaml"] = schedules.rbac(NAMESPACE, dict(PART_OF))
    return files


def helm_script() -> str:
    """kuberay/helm/install.sh: every chart the guide installs, at its pinned version."""
    out = [
        "#!/usr/bin/env bash",
        HEADER.rstrip("\n"),
        "# Usage: bash kuberay/helm/install.sh <chart> (make eks-addons, make kuberay-operator-install,",
        "# make monitoring-install). Run from the repository root; `helm upgrade --install` is",
        "# idempotent, so a second run applies changed values.",
        "set -euo pipefail",
        'case "${1:?usage: install.sh <chart>}" in',
    ]
    for name, chart in CHARTS.items():
        release = RELEASES.get(name, name)
        flags = " \\\n      ".join(chart.flags)
        out += [
            f"  {name})",
            f"    helm repo add {chart.repo} {chart.url} --force-update",
            f"    helm upgrade --install {release} {chart.repo}/{name} --version {chart.version} \\",
            f"      --namespace {chart.namespace} --wait \\",
            f"      {flags}",
            "    ;;",
        ]
    out += [
        '  *) echo "unknown chart $1; choose one of: ' + " ".join(CHARTS) + '" >&2; exit 2 ;;',
        "esac",
        "",
    ]
    return "\n".join(out)


class _Dumper(yaml.SafeDumper):
    """yaml.safe_dump's, plus `schedules.Literal` text as a block literal (`|`)."""


_Dumper.add_representer(
    schedules.Literal,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|"),
)


def render_text(objects: list[dict[str, Any]]) -> str:
    return HEADER + "---\n".join(yaml.dump(obj, Dumper=_Dumper, sort_keys=False) for obj in objects)


def render(site: Site) -> dict[str, str]:
    """Every generated file (path under kuberay/ -> text), checked: nothing is written unless all
    of it would work (raylife.deploy.checks.generation_problems)."""
    objects = manifests(site)
    texts = {name: render_text(items) for name, items in objects.items()}
    texts["helm/install.sh"] = helm_script()
    layer = models_layer.dockerfile()
    if layer is not None:
        texts[models_layer.DOCKERFILE] = layer
    charts = {name: chart.version for name, chart in CHARTS.items()}
    # The RayJobs the CronJobs create are checked like the others (they live in ConfigMaps).
    problems = checks.generation_problems(
        {**objects, **schedules.templates(objects)},
        site.groups(),
        charts,
        {"kuberay/helm/install.sh": texts["helm/install.sh"]},
    )
    problems += schedules.problems(objects)
    problems += checks.version_problems(site.cluster_config, datetime.date.today())
    problems += models_layer.problems()
    if problems:
        raise RaylifeError(checks.lines(problems))
    return texts


def write(folder: Path, site: Site | None = None) -> list[Path]:
    texts = render(site or load_site(folder))  # raises before anything is written
    paths = []
    for name, text in texts.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths


def add_site_flags(parser: argparse.ArgumentParser) -> None:
    """The generator's inputs as flags (`raylife kuberay-manifests`, `python -m` this module)."""
    parser.add_argument("folder", nargs="?", default="kuberay")
    parser.add_argument(
        "--registry", help="ECR repository (default: $RAYLIFE_REGISTRY or a placeholder)"
    )
    parser.add_argument("--commit", help="git commit of the images, 12 hex digits")
    parser.add_argument("--redis-address", help="GCS Redis (ElastiCache primary endpoint)")
    parser.add_argument("--train-token", type=int, help="rotation number of the training token")
    parser.add_argument("--serve-token", type=int, help="rotation number of the serving token")


def write_from_args(args: argparse.Namespace) -> list[Path]:
    """Check, then write the manifests the parsed site flags describe (nothing on a problem)."""
    folder = Path(args.folder)
    site = load_site(
        folder,
        registry=args.registry,
        commit=args.commit,
        redis_address=args.redis_address,
        train_token=args.train_token,
        serve_token=args.serve_token,
    )
    return write(folder, site)


def main(argv: list[str] | None = None) -> None:
    """python -m raylife.deploy.kuberay [FOLDER] [--registry ...] = raylife kuberay-manifests."""
    parser = argparse.ArgumentParser(prog="python -m raylife.deploy.kuberay")
    add_site_flags(parser)
    try:
        paths = write_from_args(parser.parse_args(argv))
    except RaylifeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
