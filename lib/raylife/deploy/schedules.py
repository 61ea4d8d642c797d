"""Scheduled RayJobs on EKS: `kuberay/cron-job.monitor-<model>.yaml` runs `raylife monitor <model>`
hourly, `kuberay/cron-job.retrain-<model>.yaml` runs `raylife retrain <model> --when-drifted` daily
(table models), and `kuberay/rbac.scheduler.yaml` is the one account allowed to start them.

KubeRay v1.7.0 has no RayCronJob: its CRDs are RayCluster, RayJob and RayService only, and a
RayJob's spec has no schedule field (the v1.7.0 CRDs the manifest tests validate against). So a
Kubernetes `batch/v1` CronJob runs a kubectl pod that creates a RayJob from a template mounted out
of a ConfigMap in the same file. The RayJob is the training jobs' own (`kuberay.ray_job`: image,
rayVersion, token, store account, cleanup), with a generated name, so each run is a new RayJob.

`kubectl create`, not `apply`: RayJob names must be unique, and the template has
`metadata.generateName` (the API server appends a random suffix per run). `apply` refuses an
object without a name, and with a fixed name it would only re-apply the finished RayJob of the
previous run, which KubeRay never starts again.

The kubectl pod's account (`raylife-scheduler`) may `create` `rayjobs` in the namespace and do
nothing else: no get, list or delete, no pods, secrets or rayclusters. The RayJob's own pods run
as the training account, which reads the store through IRSA; the scheduler needs no AWS access.

This module knows nothing of models or sites: `raylife.deploy.kuberay` hands it the RayJob, the
image and the pod settings (like `raylife.deploy.tracking_server`), and runs `problems` before it
writes anything.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import yaml

from raylife.deploy import checks

Objects = checks.Objects

MONITOR_SCHEDULE = "17 * * * *"
"""Hourly, off the full hour (when everyone's CronJobs start). Cron syntax, in TIME_ZONE."""
RETRAIN_SCHEDULE = "43 3 * * *"
"""Daily, at night, after the 03:17 monitor run's deadline (25 minutes): the retrain reads the
latest report that run wrote. Cron syntax, in TIME_ZONE."""
VERBS: dict[str, tuple[str, ...]] = {"monitor": (), "retrain": ("--when-drifted",)}
"""What a schedule may run: `<verb>-<model>` runs `raylife <verb> <model>` with these flags."""
TIME_ZONE = "Etc/UTC"
ACCOUNT = "raylife-scheduler"
"""The kubectl pod's service account: the only one that may create RayJobs on a schedule."""
ROLE_RULES = [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]
"""Everything the scheduler may do: `kubectl create -f` of one RayJob (a create never reads)."""
SCHEDULE_LABEL = "raylife.io/schedule"
"""On each RayJob a schedule creates: `kubectl get rayjob -l raylife.io/schedule=monitor-iris`."""
WORKLOAD_LABEL = {"raylife.io/workload": "scheduler"}
"""The kubectl pod's: like the serving pods, it is not admitted to the MLflow server."""
TEMPLATE_KEY = "ray-job.yaml"
TEMPLATE_DIR = "/template"
KUBECTL_VERSION = "v1.35.0"
"""The official image (registry.k8s.io/kubectl), within one minor of the cluster's Kubernetes
(kuberay/eks/cluster.yaml). registry.k8s.io never moves a release tag; a digest may be added."""
KUBECTL_IMAGE = f"kubectl:{KUBECTL_VERSION}"
PULL_THROUGH_PREFIX = "k8s"
"""The ECR pull-through cache rule for registry.k8s.io (docs/deploy-eks.md, step 4)."""
PINNED_KUBECTL = re.compile(r"/kubectl:v\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?$")
STARTING_DEADLINE_S = 10 * 60
"""A run missed by more than this (the controller down, a node pool full) is skipped, not made up."""
HISTORY = 3
"""Finished kubectl Jobs kept per CronJob, succeeded and failed each (their pods hold the logs)."""
JOB_TTL_S = 24 * 3600
JOB_DEADLINE_S = 5 * 60
"""The kubectl Job's own bound: creating one object takes seconds."""


class Literal(str):
    """Text written as a YAML block literal (`|`): an embedded manifest stays one line per line,
    readable, and `make eks-preflight` (which reads a line at a time) sees each image."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One scheduled RayJob, as the generator (raylife.deploy.kuberay) decides it."""

    name: str
    """`<verb>-<model>` (VERBS): the variant in the file's, the CronJob's and the RayJobs' names."""
    cron: str
    rayjob: dict[str, Any]
    """The RayJob to run (kuberay.ray_job); its `metadata.name` becomes the generateName prefix."""
    kubectl_image: str
    namespace: str
    labels: dict[str, str]
    security: dict[str, Any]
    """The container security context of every raylife container (restricted standard)."""
    pod_security: dict[str, Any]
    resources: dict[str, Any]
    node_selector: dict[str, str]

    def meta(self, name: str) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace, "labels": dict(self.labels)}


def _command(verb: str, model: str) -> str:
    return " ".join(["python", "-m", "raylife.cli", verb, model, *VERBS[verb]])


def monitor_entrypoint(model: str) -> str:
    """`raylife monitor` run by the image's Python: exit 0 no drift, 3 drift, 2 nothing to judge
    (no captures, or fewer than a window). The window and thresholds are the model's declaration's
    ([monitor]), so the schedule never overrides what the model's owner chose."""
    return _command("monitor", model)


def retrain_entrypoint(model: str) -> str:
    """`raylife retrain --when-drifted`: nothing unless the monitor's latest window of the promoted
    version drifted; then a sweep (the verb's default samples), judged against the champion. Exit 0
    when nothing drifted, the winner lost (a refusal in the history) or it won: with no Serve app in
    a RayJob, it prints the version and the `raylife promote ... --canary` to roll it out. Exit 2 on
    bad input (no monitor report, too few captured rows with feedback)."""
    return _command("retrain", model)


def _runs(entrypoint: str, verb: str, model: str) -> bool:
    """Whether `entrypoint` runs `raylife <verb> <model>` with the verb's flags (VERBS)."""
    words = entrypoint.split()
    return any(
        words[i : i + 2] == [verb, model] and set(VERBS[verb]) <= set(words[i + 2 :])
        for i in range(len(words) - 1)
    )


def template(schedule: Schedule) -> dict[str, Any]:
    """The RayJob each run creates: a generated name (unique per run), the schedule's label."""
    job = schedule.rayjob
    meta = {k: v for k, v in job["metadata"].items() if k != "name"}
    meta = {
        "generateName": f"{job['metadata']['name']}-",
        **meta,
        "labels": {**meta.get("labels", {}), SCHEDULE_LABEL: schedule.name},
    }
    return {**job, "metadata": meta}


def _config_map_name(schedule: Schedule) -> str:
    return f"cronjob-{schedule.name}-rayjob"


def config_map(schedule: Schedule) -> dict[str, Any]:
    text = yaml.safe_dump(template(schedule), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": schedule.meta(_config_map_name(schedule)),
        "data": {TEMPLATE_KEY: Literal(text)},
    }


def _pod(schedule: Schedule) -> dict[str, Any]:
    container = {
        "name": "kubectl",
        "image": schedule.kubectl_image,
        "imagePullPolicy": "IfNotPresent",
        # create, not apply: the template has generateName (see the module's docstring).
        "command": ["kubectl", "create", "--filename", f"{TEMPLATE_DIR}/{TEMPLATE_KEY}"],
        "args": ["--output", "name"],
        # kubectl caches API discovery under $HOME; the root filesystem is read-only.
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": schedule.resources,
        "securityContext": {**schedule.security, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "template", "mountPath": TEMPLATE_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "metadata": {"labels": {**schedule.labels, **WORKLOAD_LABEL}},
        "spec": {
            "serviceAccountName": ACCOUNT,
            # The one pod that calls the Kubernetes API (the account itself mounts no token).
            "automountServiceAccountToken": True,
            "restartPolicy": "Never",
            "securityContext": schedule.pod_security,
            "nodeSelector": schedule.node_selector,
            "containers": [container],
            "volumes": [
                {"name": "template", "configMap": {"name": _config_map_name(schedule)}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def cron_job(schedule: Schedule) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": schedule.meta(f"cronjob-{schedule.name}"),
        "spec": {
            "schedule": schedule.cron,
            "timeZone": TIME_ZONE,
            # Governs the kubectl Jobs, which end in seconds; the RayJobs never overlap because
            # one run's activeDeadlineSeconds is shorter than the schedule's period.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": STARTING_DEADLINE_S,
            "successfulJobsHistoryLimit": HISTORY,
            "failedJobsHistoryLimit": HISTORY,
            "jobTemplate": {
                "metadata": {"labels": dict(schedule.labels)},
                "spec": {
                    # One retry: a create that failed created nothing (a generated name never
                    # collides), so a second try cannot start two runs.
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": JOB_DEADLINE_S,
                    "ttlSecondsAfterFinished": JOB_TTL_S,
                    "template": _pod(schedule),
                },
            },
        },
    }


def objects(schedule: Schedule) -> list[dict[str, Any]]:
    """kuberay/cron-job.<name>.yaml: the RayJob template, then the CronJob that creates it."""
    return [config_map(schedule), cron_job(schedule)]


def rbac(namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """kuberay/rbac.scheduler.yaml: the scheduler's account, its Role (ROLE_RULES), the binding."""

    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": dict(labels)}

    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(ACCOUNT),
            # Only the CronJob's pods mount its token, by asking for it in their own spec.
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(ACCOUNT),
            "rules": [dict(rule) for rule in ROLE_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(ACCOUNT),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
        },
    ]


# ---- reading them back, and the rules `make kuberay-manifests` refuses to break -----------------


def _all(objects: Objects) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, items in objects.items():
        for obj in items:
            yield name, obj


def _named(rayjob: dict[str, Any]) -> dict[str, Any]:
    """The template as one run's RayJob: its generateName prefix as its name (checks name it)."""
    meta = rayjob.get("metadata") or {}
    name = meta.get("name") or str(meta.get("generateName", "?")).rstrip("-")
    return {**rayjob, "metadata": {**meta, "name": name}}


def templates(objects: Objects) -> Objects:
    """The RayJobs the CronJobs create, parsed from their ConfigMaps: `<file> (template)` -> the
    RayJob, so every check of a RayJob (sizes, images, token, deadline) sees them too."""
    return {
        f"{name} (template)": [_named(yaml.safe_load(obj["data"][TEMPLATE_KEY]))]
        for name, obj in _all(objects)
        if obj.get("kind") == "ConfigMap" and TEMPLATE_KEY in (obj.get("data") or {})
    }


def _normal(rules: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], ...]]:
    keys = ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
    return sorted(tuple(tuple(sorted(r.get(k) or ())) for k in keys) for r in rules)


def rbac_problems(objects: Objects) -> list[str]:
    """The scheduler's account is bound to one Role, which grants exactly ROLE_RULES; the account
    mounts no token by default."""
    roles = {o["metadata"]["name"]: o for _, o in _all(objects) if o.get("kind") == "Role"}
    problems = []
    bound = [
        (name, b)
        for name, b in _all(objects)
        if b.get("kind") in ("RoleBinding", "ClusterRoleBinding")
        and any(
            s.get("kind") == "ServiceAccount" and s.get("name") == ACCOUNT
            for s in b.get("subjects") or []
        )
    ]
    if len(bound) != 1 or bound[0][1]["kind"] != "RoleBinding":
        problems.append(
            f"{ACCOUNT} is bound {len(bound)} times ({[b['kind'] for _, b in bound]}); bind it "
            "once, by a RoleBinding in the namespace (raylife.deploy.schedules.rbac)"
        )
    for name, binding in bound:
        ref = binding.get("roleRef") or {}
        role = roles.get(ref.get("name", "")) if ref.get("kind") == "Role" else None
        granted = (role or {}).get("rules") or []
        if role is None or _normal(granted) != _normal(ROLE_RULES):
            problems.append(
                f"kuberay/{name}: {ACCOUNT} may {granted or ref}; grant exactly {ROLE_RULES} "
                "(create RayJobs, nothing on pods, secrets or rayclusters, no wildcard)"
            )
    for name, obj in _all(objects):
        if (
            obj.get("kind") == "ServiceAccount"
            and obj["metadata"]["name"] == ACCOUNT
            and obj.get("automountServiceAccountToken") is not False
        ):
            problems.append(
                f"kuberay/{name}: ServiceAccount {ACCOUNT} mounts its token in every pod that "
                "uses it; set automountServiceAccountToken: false (the CronJob's pods ask)"
            )
    return problems


def _cron_problems(where: str, cron: dict[str, Any], maps: dict[str, dict]) -> list[str]:
    spec = cron["spec"]
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    problems = []
    if spec.get("concurrencyPolicy") != "Forbid":
        problems.append(f"{where}: concurrencyPolicy {spec.get('concurrencyPolicy')!r}; use Forbid")
    if not spec.get("startingDeadlineSeconds") or not job.get("ttlSecondsAfterFinished"):
        problems.append(
            f"{where}: no startingDeadlineSeconds or Job ttlSecondsAfterFinished; set both"
        )
    if pod.get("serviceAccountName") != ACCOUNT:
        problems.append(f"{where}: runs as {pod.get('serviceAccountName')!r}; use {ACCOUNT}")
    for c in pod["containers"]:
        image = c["image"]
        if image.endswith(":latest") or not PINNED_KUBECTL.search(image):
            problems.append(
                f"{where}: kubectl image {image}; pin a release (kubectl:vX.Y.Z[@sha256:...]) "
                "pulled through ECR (KUBECTL_VERSION in raylife.deploy.schedules)"
            )
        command = [*c.get("command", []), *c.get("args", [])]
        if command[:2] != ["kubectl", "create"]:
            problems.append(
                f"{where}: runs {' '.join(command)!r}; use `kubectl create -f`: `apply` cannot "
                "create a RayJob with metadata.generateName"
            )
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounted = (volumes.get("template") or {}).get("configMap", {}).get("name", "")
    rayjob = maps.get(mounted)
    if rayjob is None:
        problems.append(f"{where}: mounts no RayJob template of its own file; mount its ConfigMap")
        return problems
    meta = rayjob.get("metadata") or {}
    if rayjob.get("kind") != "RayJob" or "name" in meta or not meta.get("generateName"):
        problems.append(
            f"{where}: the template is no RayJob with metadata.generateName and no name; each "
            "run needs a new, unique RayJob"
        )
    return problems + _run_problems(where, cron["metadata"]["name"], rayjob)


def _run_problems(where: str, cron_name: str, rayjob: dict[str, Any]) -> list[str]:
    """`cronjob-<verb>-<model>` creates RayJobs that run `raylife <verb> <model>` (+ VERBS' flags),
    once: a scheduled run is not retried, the next run is the retry."""
    verb, _, model = cron_name.removeprefix("cronjob-").partition("-")
    if verb not in VERBS or not model:
        return [
            f"{where}: no schedule of raylife.deploy.schedules.VERBS; name it "
            f"cronjob-<{'|'.join(VERBS)}>-<model>"
        ]
    spec = rayjob.get("spec") or {}
    entry = spec.get("entrypoint", "")
    problems = []
    if not _runs(entry, verb, model):
        wanted = " ".join(["raylife", verb, model, *VERBS[verb]])
        problems.append(f"{where}: the RayJob runs {entry!r}, not `{wanted}`")
    if spec.get("backoffLimit") != 0:
        problems.append(
            f"{where}: the RayJob's backoffLimit is {spec.get('backoffLimit')!r}; use 0 (a retry "
            "builds a new cluster to repeat the run; the next scheduled run is the retry)"
        )
    return problems


def problems(objects: Objects) -> list[str]:
    """What is wrong with the schedules in `objects` (nothing when there are none)."""
    found = []
    for name, items in objects.items():
        maps = {
            o["metadata"]["name"]: yaml.safe_load(o["data"][TEMPLATE_KEY])
            for o in items
            if o.get("kind") == "ConfigMap" and TEMPLATE_KEY in (o.get("data") or {})
        }
        for obj in items:
            if obj.get("kind") == "CronJob":
                where = f"kuberay/{name}: CronJob {obj['metadata']['name']}"
                found += _cron_problems(where, obj, maps)
    if any(o.get("kind") == "CronJob" for _, o in _all(objects)):
        found += rbac_problems(objects)
    return found
