"""Checks of what a real EKS cluster would do with kuberay/, beyond what a schema can see.

Each function takes manifests or file texts and returns problems, one line each, naming the fix.
`raylife.deploy.kuberay` runs the ones about its own output before it writes anything;
tests/manifests runs them, and the developer-only rules of raylife_dev.manifest_checks, on the
committed files.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

from raylife.deploy import deadlines, nodes

Objects = dict[str, list[dict[str, Any]]]
"""File name under kuberay/ -> the objects it holds."""

EKS_STANDARD_SUPPORT_ENDS = {
    "1.33": datetime.date(2026, 7, 29),
    "1.34": datetime.date(2026, 12, 2),
    "1.35": datetime.date(2027, 3, 27),
}
"""docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html; extended support costs
0.60 USD per cluster hour instead of 0.10."""
IMMUTABLE_TAG = re.compile(
    r":\d+\.\d+\.\d+-ray\d+\.\d+\.\d+-g[0-9a-f]{12}-(cpu|gpu)(-m[0-9a-f]{12})?$"
)
"""<raylife version>-ray<Ray version>-g<12-digit git commit>-<variant>[-m<models digest>]: one
tag, one build (the suffix: the team's models layer, raylife.deploy.models_layer)."""
PINNED_TAG = re.compile(r":v?\d+\.\d+(\.\d+)?(-[\w.]+)?$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
PROXY_HEALTH_PATH = "/-/healthz"
"""What a Ray Serve proxy answers by itself, routed to no application: 200 while it is healthy, 503
once it drains (ray/serve/_private/proxy.py); KubeRay's readiness probe of Serve pods uses it too."""


def _all(objects: Objects) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, items in objects.items():
        for obj in items:
            yield name, obj


def ray_cluster(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "RayCluster":
        return spec
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig")


def pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(role, pod template) of a Ray object: head, worker groups, submitter."""
    cluster = ray_cluster(obj)
    if not cluster:
        return []
    out = [("head", cluster["headGroupSpec"]["template"])]
    out += [
        (f"worker group {g['groupName']!r}", g["template"]) for g in cluster["workerGroupSpecs"]
    ]
    if "submitterPodTemplate" in obj["spec"]:
        out.append(("submitter", obj["spec"]["submitterPodTemplate"]))
    return out


def _with_autoscaler(obj: dict[str, Any], role: str, pod: dict[str, Any]) -> dict[str, Any]:
    """KubeRay adds the autoscaler container to the head pod: count its requests too."""
    cluster = ray_cluster(obj) or {}
    if role != "head" or not cluster.get("enableInTreeAutoscaling"):
        return pod
    resources = (cluster.get("autoscalerOptions") or {}).get("resources") or {}
    return {**pod, "containers": [*pod["containers"], {"resources": resources}]}


# ---- 1. every pod fits a node of the group it is sent to -----------------------------------------


def fit_problems(objects: Objects, groups: dict[str, nodes.NodeGroup]) -> list[str]:
    problems = []
    for name, obj in _all(objects):
        for role, template in pod_templates(obj):
            pod = _with_autoscaler(obj, role, template["spec"])
            problems += nodes.fit_errors(f"kuberay/{name}: {role}", pod, groups)
    return problems


# ---- 8. worker pods fill their nodes ------------------------------------------------------------


# ---- 3. the backend keeps connections open longer than the ALB ----------------------------------


def alb_idle_timeout_s(ingress: dict[str, Any]) -> int | None:
    attributes = (
        ingress["metadata"]
        .get("annotations", {})
        .get("alb.ingress.kubernetes.io/load-balancer-attributes", "")
    )
    found = re.search(r"idle_timeout\.timeout_seconds=(\d+)", attributes)
    return int(found.group(1)) if found else None


def keep_alive_problems(objects: Objects) -> list[str]:
    ingresses = [o for _, o in _all(objects) if o.get("kind") == "Ingress"]
    services = [o for _, o in _all(objects) if o.get("kind") == "RayService"]
    problems = []
    for ingress in ingresses:
        idle = alb_idle_timeout_s(ingress)
        if idle is None:
            problems.append(
                f"Ingress {ingress['metadata']['name']}: no ALB idle timeout; set the annotation "
                "alb.ingress.kubernetes.io/load-balancer-attributes: idle_timeout.timeout_seconds=60"
            )
            continue
        for service in services:
            config = yaml.safe_load(service["spec"]["serveConfigV2"])
            keep_alive = (config.get("http_options") or {}).get("keep_alive_timeout_s", 90)
            if keep_alive <= idle:
                problems.append(
                    f"RayService {service['metadata']['name']}: Serve keep_alive_timeout_s "
                    f"{keep_alive} <= the ALB idle timeout {idle} s (502s when the ALB reuses a "
                    "closed connection); raise http_options.keep_alive_timeout_s in "
                    "serve_apps/config/eks.yaml above it"
                )
    return problems


# ---- 9. images are immutable builds --------------------------------------------------------------


def image_problems(objects: Objects) -> list[str]:
    problems = []
    for name, obj in _all(objects):
        for role, template in pod_templates(obj):
            for container in template["spec"]["containers"]:
                image = container["image"]
                raylife_image = container["name"].startswith("ray")
                ok = IMMUTABLE_TAG.search(image) if raylife_image else DIGEST.search(image)
                if not ok or image.endswith(":latest"):
                    fix = (
                        "tag raylife images <version>-ray<ray>-g<commit>-<variant> (make image)"
                        if raylife_image
                        else "pin it by digest (<image>:<tag>@sha256:...), pulled through ECR"
                    )
                    problems.append(f"kuberay/{name}: {role}: mutable image {image}; {fix}")
    return problems


# ---- 5. separate tokens for training and serving, one Secret name per rotation ----------------


# ---- 6. serving pods read, training pods write -------------------------------------------------


# ---- 7. a Kubernetes version in standard support --------------------------------------------------


def version_problems(cluster_config: dict[str, Any], today: datetime.date) -> list[str]:
    version = str(cluster_config["metadata"]["version"])
    ends = EKS_STANDARD_SUPPORT_ENDS.get(version)
    if ends is None or ends <= today + datetime.timedelta(days=30):
        newest = max(EKS_STANDARD_SUPPORT_ENDS, key=lambda v: EKS_STANDARD_SUPPORT_ENDS[v])
        return [
            f"kuberay/eks/cluster.yaml: Kubernetes {version} is not in EKS standard support for the "
            f"next 30 days (extended support costs 0.60 USD/h, not 0.10); use {newest}"
        ]
    return []


# ---- 4. every manifest is applied by a documented step, every chart pinned ---------------------


HELM_COMMAND = re.compile(
    r"helm (?:upgrade --install|install|upgrade|template|pull|show \w+)\s+(?:[\w-]+\s+)?([\w-]+/[\w-]+)[^\n]*"
)


def _helm_commands(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    return [m.group(0) for m in HELM_COMMAND.finditer(joined)]


def chart_problems(texts: dict[str, str], charts: dict[str, str]) -> list[str]:
    """Every helm command that names a chart pins `--version` to the version in `charts`."""
    problems = []
    for where, text in texts.items():
        for command in _helm_commands(text):
            chart = re.search(r"\s([\w-]+/([\w-]+))", command)
            pinned = re.search(r"--version[ =](\S+)", command)
            name = chart.group(2) if chart else "?"
            if not pinned:
                problems.append(f"{where}: `{command[:70]}...` has no --version; pin the chart")
            elif name in charts and pinned.group(1) != charts[name]:
                problems.append(
                    f"{where}: {name} --version {pinned.group(1)}, but the pinned version is "
                    f"{charts[name]} (CHARTS in lib/raylife/deploy/kuberay.py)"
                )
    for name, version in charts.items():
        if not re.fullmatch(r"v?\d+\.\d+\.\d+", version or ""):
            problems.append(
                f"chart {name}: version {version!r} is not an exact release; pin one in CHARTS "
                "(lib/raylife/deploy/kuberay.py)"
            )
    return problems


# ---- production serving ------------------------------------------------------------------------


def _service(objects: Objects) -> dict[str, Any]:
    [service] = [o for _, o in _all(objects) if o.get("kind") == "RayService"]
    return service


def health_check_problems(objects: Objects) -> list[str]:
    """The ALB judges each target (a Serve proxy) by what that proxy answers by itself. A path
    routed to an application is answered by whichever replica the proxy picks: one global signal,
    so one unhealthy replica fails every target at once and the ALB fails open."""
    service = _service(objects)
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    prefixes = [app.get("route_prefix") or "/" for app in config["applications"]]
    problems = []
    for _, ingress in ((n, o) for n, o in _all(objects) if o.get("kind") == "Ingress"):
        path = ingress["metadata"]["annotations"].get("alb.ingress.kubernetes.io/healthcheck-path")
        if path != PROXY_HEALTH_PATH:
            routed = [p for p in prefixes if path and path.startswith(p)]
            problems.append(
                f"Ingress {ingress['metadata']['name']}: ALB health check {path!r} is "
                + (
                    f"routed to the application at {max(routed, key=len)!r}"
                    if routed
                    else "no proxy path"
                )
                + f", not what each proxy answers itself; use {PROXY_HEALTH_PATH}"
            )
    return problems


# ---- 10. workloads beside Ray (the MLflow tracking server) -------------------------------------

HEALTH_PATH = "/health"


def _workload_pod_problems(where: str, pod: dict[str, Any]) -> list[str]:
    """The restricted Pod Security Standard, a read-only root with /tmp writable, sizes, probes."""
    problems = []
    security = pod.get("securityContext") or {}
    if security.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod without runAsNonRoot: true; set it (restricted standard)")
    tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for c in pod["containers"]:
        name = f"{where}: container {c['name']!r}"
        own = c.get("securityContext") or {}
        seccomp = (own.get("seccompProfile") or security.get("seccompProfile") or {}).get("type")
        if (
            own.get("allowPrivilegeEscalation") is not False
            or (own.get("capabilities") or {}).get("drop") != ["ALL"]
            or seccomp != "RuntimeDefault"
        ):
            problems.append(
                f"{name}: not restricted; set allowPrivilegeEscalation: false, capabilities.drop: "
                "[ALL], seccompProfile RuntimeDefault (raylife.deploy.kuberay.container_security)"
            )
        if own.get("readOnlyRootFilesystem") is not True or not any(
            m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in c.get("volumeMounts", [])
        ):
            problems.append(
                f"{name}: root filesystem writable, or no emptyDir at /tmp; set "
                "readOnlyRootFilesystem: true and mount an emptyDir at /tmp"
            )
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if not {"cpu", "memory"} <= set(requests) or "memory" not in limits:
            problems.append(f"{name}: no cpu/memory requests and memory limit; size it")
        elif requests["memory"] != limits["memory"]:
            problems.append(f"{name}: memory request != limit; make them equal (no eviction)")
        for probe in ("livenessProbe", "readinessProbe"):
            path = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if path != HEALTH_PATH:
                problems.append(f"{name}: {probe} {path!r}; probe {HEALTH_PATH} over HTTP")
    return problems


def workload_problems(objects: Objects) -> list[str]:
    """Deployments meet the pod rules; a ReadWriteOnce volume has one writer; Services stay
    inside the cluster (ClusterIP: nothing beside the Ingress faces the internet)."""
    problems = []
    claims = {
        o["metadata"]["name"]: o
        for _, o in _all(objects)
        if o.get("kind") == "PersistentVolumeClaim"
    }
    for name, obj in _all(objects):
        where = f"kuberay/{name}: {obj.get('kind')} {obj['metadata']['name']}"
        if obj.get("kind") == "Service" and obj["spec"].get("type") != "ClusterIP":
            problems.append(
                f"{where}: type {obj['spec'].get('type')!r}; use ClusterIP (and a port-forward)"
            )
        if obj.get("kind") != "Deployment":
            continue
        spec, pod = obj["spec"], obj["spec"]["template"]["spec"]
        problems += _workload_pod_problems(where, pod)
        for container in pod["containers"]:
            image = container["image"]
            if image.endswith(":latest") or not (
                IMMUTABLE_TAG.search(image) or PINNED_TAG.search(image)
            ):
                problems.append(f"{where}: mutable image {image}; pin a release or commit tag")
        single = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("volumes", [])
            if "persistentVolumeClaim" in v
            and "ReadWriteOnce"
            in claims.get(v["persistentVolumeClaim"]["claimName"], {})
            .get("spec", {})
            .get("accessModes", [])
        ]
        if single and (
            spec.get("replicas", 1) != 1 or (spec.get("strategy") or {}).get("type") != "Recreate"
        ):
            problems.append(
                f"{where}: ReadWriteOnce volume {single[0]} with replicas != 1 or a rolling "
                "update (two writers); use replicas: 1 and strategy Recreate"
            )
    return problems


def tracking_problems(objects: Objects) -> list[str]:
    """Every RayJob logs to a tracking server that kuberay/ ships: RAYLIFE_MLFLOW_URI in its
    runtime env names a Service (http://<name>.<namespace>.svc:<port>) of these files."""
    services = {
        (o["metadata"]["name"], o["metadata"].get("namespace"), p["port"])
        for _, o in _all(objects)
        if o.get("kind") == "Service"
        for p in o["spec"].get("ports", [])
    }
    problems = []
    for name, obj in _all(objects):
        if obj.get("kind") != "RayJob":
            continue
        env = (yaml.safe_load(obj["spec"].get("runtimeEnvYAML") or "{}") or {}).get("env_vars", {})
        uri = env.get("RAYLIFE_MLFLOW_URI", "")
        found = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)", uri)
        if not found or (found.group(1), found.group(2), int(found.group(3))) not in services:
            problems.append(
                f"kuberay/{name}: RAYLIFE_MLFLOW_URI {uri!r} names no Service of kuberay/; set it "
                "to the tracking server's (raylife.deploy.tracking_server.uri) in the runtime env"
            )
    return problems


# ---- 11. drains, logs, accounts: what Kubernetes, KubeRay and Fluent Bit do with the pods -------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _pod_labels(obj: dict[str, Any], role: str, template: dict[str, Any]) -> dict[str, str]:
    """The labels KubeRay gives the pod of `template` (its own plus ray.io/group, node-type)."""
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    if role.startswith("worker group"):
        labels |= {"ray.io/group": role.split("'")[1], "ray.io/node-type": "worker"}
    elif role == "head":
        labels |= {"ray.io/group": "headgroup", "ray.io/node-type": "head"}
    return labels


def disruption_budget_problems(objects: Objects, owner_scales: bool) -> list[str]:
    """A PDB over pods whose owner has no scale subresource (a RayCluster) must say `minAvailable`
    as an integer: Kubernetes' disruption controller cannot count the expected pods for
    `maxUnavailable` or a percentage and then allows 0 disruptions, so every drain hangs."""
    problems = []
    ray_pods = [
        (name, _pod_labels(obj, role, template), obj)
        for name, obj in _all(objects)
        for role, template in pod_templates(obj)
        if role != "submitter"
    ]
    for name, budget in _all(objects):
        if budget.get("kind") != "PodDisruptionBudget":
            continue
        spec = budget["spec"]
        owned = [n for n, labels, _ in ray_pods if _selects(spec["selector"], labels)]
        where = f"kuberay/{name}: PodDisruptionBudget {budget['metadata']['name']}"
        if not owned:
            problems.append(f"{where}: selects no Ray pod of kuberay/; fix its selector")
            continue
        if owner_scales:
            continue
        min_available = spec.get("minAvailable")
        if "maxUnavailable" in spec or not isinstance(min_available, int):
            form = (
                f"maxUnavailable: {spec['maxUnavailable']}"
                if "maxUnavailable" in spec
                else f"minAvailable: {min_available!r}"
            )
            problems.append(
                f"{where}: {form}, but its pods' owner (RayCluster) has no scale subresource "
                "(vendored CRD), so Kubernetes allows 0 disruptions and every drain hangs; use an "
                "integer minAvailable below the group's minReplicas"
            )
    for _, obj in _all(objects):
        cluster = ray_cluster(obj) or {}
        for group in cluster.get("workerGroupSpecs", []):
            labels = _pod_labels(obj, f"worker group {group['groupName']!r}", group["template"])
            for name, budget in _all(objects):
                spec = budget.get("spec") or {}
                if budget.get("kind") == "PodDisruptionBudget" and _selects(
                    spec["selector"], labels
                ):
                    floor = spec.get("minAvailable")
                    if isinstance(floor, int) and floor >= group["minReplicas"]:
                        problems.append(
                            f"kuberay/{name}: minAvailable {floor} >= minReplicas "
                            f"{group['minReplicas']} of group {group['groupName']!r}: a drain at "
                            "the minimum can never evict; use minReplicas - 1"
                        )
    return problems


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """glob(3) as Fluent Bit's tail uses it: `*` and `?` never cross a `/` (not recursive)."""
    out = ""
    for char in pattern:
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
    return re.compile(out + r"\Z")


RAY_LOGS = "/tmp/ray/session_latest/logs"
RAY_LOG_FILES = (
    "raylet.out",
    "raylet.err",
    "gcs_server.out",
    "monitor.log",  # the autoscaler (KubeRay's autoscaler container, on the head)
    "dashboard.log",
    "worker-0123abcd-01000000-4242.out",
    "python-core-worker-0123abcd_4242.log",
    "job-driver-raysubmit_AbCdEf.log",
    "serve/controller_4242.log",
    "serve/proxy_10.0.1.17.log",
    "serve/replica_iris_ModelServer_a1b2c3d4.log",
    "events/event_GCS.log",
)
"""Where Ray 2.60 writes a pod's logs, under RAY_LOGS: its processes in the folder itself, Serve's
controller, proxies and replicas (access lines included) in serve/, events in events/."""


def _fluent_bit_inputs(objects: Objects) -> list[dict[str, str]]:
    """The [INPUT] sections of every Fluent Bit config in kuberay/ (key -> value)."""
    inputs: list[dict[str, str]] = []
    for _, obj in _all(objects):
        if obj.get("kind") != "ConfigMap":
            continue
        for text in (obj.get("data") or {}).values():
            section = None
            for line in text.splitlines():
                if line.strip().startswith("["):
                    section = line.strip().upper()
                    if section == "[INPUT]":
                        inputs.append({})
                elif section == "[INPUT]" and line.strip():
                    key, _, value = line.strip().partition(" ")
                    inputs[-1][key.lower()] = value.strip()
    return inputs


def log_shipping_problems(objects: Objects) -> list[str]:
    """Every file Ray writes is matched by a shipped tail path, read from its first line, and lies
    on the volume the sidecar reads (the autoscaler's included)."""
    tails = [i for i in _fluent_bit_inputs(objects) if i.get("name") == "tail"]
    patterns = [p.strip() for i in tails for p in i.get("path", "").split(",") if p.strip()]
    regexes = [_glob_regex(p) for p in patterns]
    problems = [
        f"kuberay/fluent-bit.yaml: {RAY_LOGS}/{f} is matched by no tail Path {patterns} (the "
        "globs are not recursive); add the folder's own glob"
        for f in RAY_LOG_FILES
        if not any(r.match(f"{RAY_LOGS}/{f}") for r in regexes)
    ]
    for tail in tails:
        if "db" in tail and tail.get("read_from_head", "off").lower() not in ("on", "true"):
            problems.append(
                "kuberay/fluent-bit.yaml: tail input with a DB but Read_from_Head off: a file found "
                "by a later scan is read from its end (a crash at start-up never ships); set "
                "Read_from_Head On"
            )
    for name, obj in _all(objects):
        cluster = ray_cluster(obj) or {}
        for role, template in pod_templates(obj):
            if role != "head" or not cluster.get("enableInTreeAutoscaling"):
                continue
            [ray] = [c for c in template["spec"]["containers"] if c["name"].startswith("ray-")]
            mounted = {m["mountPath"]: m["name"] for m in ray.get("volumeMounts", [])}
            if mounted.get("/tmp/ray") != "ray-logs":
                problems.append(
                    f"kuberay/{name}: head mounts /tmp/ray from {mounted.get('/tmp/ray')!r}; "
                    "KubeRay mounts a volume named 'ray-logs' into its autoscaler container, so "
                    "the autoscaler's logs land on another volume than the one shipped; name "
                    "the volume ray-logs"
                )
    return problems


LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def access_log_problems(objects: Objects) -> list[str]:
    """Serve writes access lines at INFO: a logger set above INFO drops every one of them. Checked
    for the proxies (the config's logging_config) and each deployment (what its replicas use)."""
    config = yaml.safe_load(_service(objects)["spec"]["serveConfigV2"])
    ray_defaults = {"log_level": "INFO", "enable_access_log": True}
    proxies = {**ray_defaults, **(config.get("logging_config") or {})}
    scopes = [("the proxies (logging_config)", proxies)]
    for app in config["applications"]:
        per_app = {**proxies, **(app.get("logging_config") or {})}
        for d in app.get("deployments") or [{"name": "*"}]:
            scopes.append(
                (f"app {app['name']!r} {d['name']}", {**per_app, **(d.get("logging_config") or {})})
            )
    problems = []
    for where, logging in scopes:
        level = str(logging["log_level"]).upper()
        if logging["enable_access_log"] and LEVELS.get(level, 20) > LEVELS["INFO"]:
            problems.append(
                f"RayService serveConfigV2: {where}: enable_access_log with log_level {level} "
                "drops the INFO access lines; set logging_config.log_level: INFO "
                "(serve_apps/config/eks.yaml)"
            )
    return problems


def service_account_problems(objects: Objects) -> list[str]:
    """KubeRay binds the autoscaler's Role (patch pods, patch the RayCluster) to the head's
    service account. Pods other than the head that run as that account must not mount its token;
    the head (the one pod holding it) stays out of the internet-facing Serve Service."""
    problems = []
    for name, obj in _all(objects):
        cluster = ray_cluster(obj)
        if not cluster:
            continue
        templates = pod_templates(obj)
        head = dict(templates)["head"]["spec"]
        account = head.get("serviceAccountName", "default")
        for role, template in templates:
            pod = template["spec"]
            if role == "head" or pod.get("serviceAccountName", "default") != account:
                continue
            if pod.get("automountServiceAccountToken") is not False:
                problems.append(
                    f"kuberay/{name}: {role} runs as {account!r}, the head's account KubeRay "
                    "grants the autoscaler's RBAC, with its token mounted; set "
                    "automountServiceAccountToken: false (IRSA still works)"
                )
        if obj["kind"] == "RayService" and not obj["spec"].get("excludeHeadPodFromServeSvc"):
            problems.append(
                f"kuberay/{name}: the head (holding the autoscaler's token) is in the Serve "
                "Service behind the ALB; set excludeHeadPodFromServeSvc: true"
            )
    return problems


def spread_problems(objects: Objects) -> list[str]:
    """During a NewCluster upgrade two Ray clusters carry the same labels: each spreads its own
    pods only if the constraint also keys on ray.io/cluster."""
    problems = []
    for name, obj in _all(objects):
        for role, template in pod_templates(obj):
            for c in template["spec"].get("topologySpreadConstraints", []):
                if "ray.io/cluster" not in (c.get("matchLabelKeys") or []):
                    problems.append(
                        f"kuberay/{name}: {role}: topology spread over {c['topologyKey']} counts "
                        "both clusters' pods during an upgrade; add matchLabelKeys: [ray.io/cluster]"
                    )
    return problems


def deadline_problems(objects: Objects) -> list[str]:
    """Every RayJob's activeDeadlineSeconds is its budget (raylife.deploy.deadlines), whose stall
    allowance covers the bound of the watchdog that runs inside it."""
    problems = []
    for _, obj in _all(objects):
        if obj.get("kind") == "RayJob":
            meta = obj.get("metadata", {})
            problems += deadlines.problems(
                meta.get("name", "?"), obj.get("spec", {}), meta.get("annotations") or {}
            )
    return problems


def generation_problems(
    objects: Objects,
    groups: dict[str, nodes.NodeGroup],
    charts: dict[str, str],
    texts: dict[str, str],
) -> list[str]:
    """What `make kuberay-manifests` refuses to write."""
    return [
        *fit_problems(objects, groups),
        *keep_alive_problems(objects),
        *image_problems(objects),
        *chart_problems(texts, charts),
        *workload_problems(objects),
        *tracking_problems(objects),
        # KubeRay's RayCluster CRD has no scale subresource (tests/manifests reads the CRDs).
        *disruption_budget_problems(objects, owner_scales=False),
        *health_check_problems(objects),
        *log_shipping_problems(objects),
        *access_log_problems(objects),
        *service_account_problems(objects),
        *spread_problems(objects),
        *deadline_problems(objects),
    ]


def lines(problems: Iterable[str]) -> str:
    problems = list(problems)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}" if problems else ""
