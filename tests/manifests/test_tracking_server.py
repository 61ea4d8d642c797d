"""kuberay/mlflow.yaml: the MLflow tracking server the training RayJobs log to (issue 15, item 5).

Schema-ish checks of the committed file (the strict Kubernetes schemas run in test_manifests.py),
the semantic checks of raylife.deploy.checks on it, and the generator refusing a broken server.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from raylife.deploy import checks, kuberay, tracking_server
from raylife.errors import RaylifeError
from raylife_dev import manifest_checks

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = manifest_checks.load(ROOT / "kuberay")
SERVER = {o["kind"]: o for o in OBJECTS["mlflow.yaml"]}
CLUSTER = yaml.safe_load((ROOT / "kuberay" / "eks" / "cluster.yaml").read_text())
URI = f"http://mlflow.{kuberay.NAMESPACE}.svc:5000"


def _no(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


def _pod() -> dict[str, Any]:
    return SERVER["Deployment"]["spec"]["template"]["spec"]


def _container() -> dict[str, Any]:
    [container] = _pod()["containers"]
    return container


def test_the_file_holds_the_server_its_service_volume_and_policy():
    assert set(SERVER) == {
        "StorageClass",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "NetworkPolicy",
    }
    assert tracking_server.uri(kuberay.NAMESPACE) == URI


def test_the_service_is_cluster_internal_and_selects_the_server():
    service = SERVER["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["selector"] == SERVER["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert {"name": "http", "containerPort": 5000} in _container()["ports"]


def test_probes_ask_health_over_http():
    container = _container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    # The first start migrates the database: the startup probe gives it minutes, not seconds.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_the_pod_meets_the_restricted_standard_with_a_read_only_root():
    pod, container = _pod(), _container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert (
        security["runAsNonRoot"] is True and security["seccompProfile"]["type"] == "RuntimeDefault"
    )
    assert security["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(
        resources["limits"]
    )
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_one_sqlite_writer_on_a_kept_volume():
    spec = SERVER["Deployment"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    args = _container()["args"]
    backend = args[args.index("--backend-store-uri") + 1]
    mounts = {m["name"]: m["mountPath"] for m in _container()["volumeMounts"]}
    assert backend == f"sqlite:///{mounts['data']}/mlflow.db"
    [claim] = [v for v in _pod()["volumes"] if v["name"] == "data"]
    assert (
        claim["persistentVolumeClaim"]["claimName"]
        == SERVER["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert (
        SERVER["PersistentVolumeClaim"]["spec"]["storageClassName"]
        == SERVER["StorageClass"]["metadata"]["name"]
    )
    storage = SERVER["StorageClass"]
    assert storage["provisioner"] == "ebs.csi.aws.com"
    assert storage["reclaimPolicy"] == "Retain"
    assert storage["volumeBindingMode"] == "WaitForFirstConsumer"


def test_the_image_is_the_pinned_raylife_cpu_image_the_jobs_run():
    image = _container()["image"]
    assert checks.IMMUTABLE_TAG.search(image) and image.endswith("-cpu"), image
    [job] = OBJECTS["ray-job.train-iris.yaml"]
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == image  # the server's MLflow is the clients' own version
    assert _container()["command"] == ["mlflow"] and _container()["args"][0] == "server"


def test_artifacts_go_to_s3_with_the_servers_own_irsa_role():
    args = _container()["args"]
    assert args[args.index("--artifacts-destination") + 1] == f"s3://{kuberay.BUCKET}/mlflow"
    assert _pod()["serviceAccountName"] == tracking_server.ACCOUNT
    _no(manifest_checks.tracking_iam_problems(OBJECTS, CLUSTER, kuberay.BUCKET))
    [account] = [
        a
        for a in CLUSTER["iam"]["serviceAccounts"]
        if a["metadata"]["name"] == tracking_server.ACCOUNT
    ]
    assert account["metadata"]["namespace"] == kuberay.NAMESPACE
    policy = yaml.safe_load((ROOT / "kuberay" / "eks" / "iam-policy.mlflow.json").read_text())
    assert policy == account["attachPolicy"], "iam-policy.mlflow.json differs from cluster.yaml"


def test_the_server_answers_its_service_name_and_a_port_forward():
    args = _container()["args"]
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert {f"mlflow.{kuberay.NAMESPACE}.svc:5000", "localhost:*", "127.0.0.1:*"} <= set(hosts)
    assert args[args.index("--host") + 1] == "0.0.0.0"


def test_every_training_rayjob_logs_to_the_server():
    jobs = [o for objs in OBJECTS.values() for o in objs if o["kind"] == "RayJob"]
    assert len(jobs) >= 6
    for job in jobs:
        env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
        assert env["RAYLIFE_MLFLOW_URI"] == URI, job["metadata"]["name"]
    _no(checks.tracking_problems(OBJECTS))
    _no(checks.workload_problems(OBJECTS))


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, Exists / DoesNotExist / In / NotIn)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for rule in selector.get("matchExpressions", []):
        key, op, values = rule["key"], rule["operator"], rule.get("values", [])
        ok = {
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
        }[op]
        if not ok:
            return False
    return True


def test_only_the_training_pods_may_call_the_server():
    policy = SERVER["NetworkPolicy"]["spec"]
    assert _matches(
        policy["podSelector"], SERVER["Deployment"]["spec"]["template"]["metadata"]["labels"]
    )
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    [peer] = rule["from"]
    for objs in OBJECTS.values():
        for obj in objs:
            for role, template in checks.pod_templates(obj):
                labels = template["metadata"]["labels"]
                admitted = _matches(peer["podSelector"], labels)
                assert admitted == (obj["kind"] == "RayJob"), f"{obj['metadata']['name']} {role}"
    # The namespace-wide policy (every raylife pod to every raylife pod) does not select it.
    [wide] = [o for o in OBJECTS["network-policy.yaml"] if o["kind"] == "NetworkPolicy"]
    assert not _matches(wide["spec"]["podSelector"], _pod_labels())


def _pod_labels() -> dict[str, str]:
    return SERVER["Deployment"]["spec"]["template"]["metadata"]["labels"]


def test_the_guide_applies_it_and_opens_the_ui_with_a_port_forward():
    guide = (ROOT / "docs" / "deploy-eks.md").read_text()
    assert "kubectl apply -f kuberay/mlflow.yaml" in guide
    assert "kubectl port-forward -n raylife svc/mlflow 5000:5000" in guide
    # Applied before the first RayJob: a job whose tracking server is down stops at once.
    assert guide.index("kubectl apply -f kuberay/mlflow.yaml") < guide.index(
        "kubectl apply -f kuberay/ray-job.train-iris.yaml"
    )


# ---- the checks catch a broken server, and the generator refuses it ---------------------------


def _broken(change) -> dict[str, list[dict[str, Any]]]:
    objects = yaml.safe_load(yaml.safe_dump(OBJECTS))  # a deep copy
    for obj in objects["mlflow.yaml"]:
        change(obj)
    return objects


@pytest.mark.parametrize(
    "change,fix",
    [
        (lambda o: o["kind"] == "Service" and o["spec"].update(type="LoadBalancer"), "ClusterIP"),
        (lambda o: o["kind"] == "Deployment" and o["spec"].update(replicas=2), "replicas: 1"),
        (
            lambda o: (
                o["kind"] == "Deployment"
                and o["spec"]["template"]["spec"]["containers"][0].pop("livenessProbe")
            ),
            "livenessProbe",
        ),
        (
            lambda o: (
                o["kind"] == "Deployment"
                and o["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(
                    readOnlyRootFilesystem=False
                )
            ),
            "readOnlyRootFilesystem",
        ),
        (
            lambda o: (
                o["kind"] == "Deployment"
                and o["spec"]["template"]["spec"]["containers"][0].update(
                    image="ghcr.io/mlflow/mlflow:latest"
                )
            ),
            "mutable image",
        ),
    ],
    ids=["load-balancer", "two-writers", "no-liveness", "writable-root", "latest"],
)
def test_workload_checks_name_the_problem_and_the_fix(change, fix):
    problems = checks.workload_problems(_broken(change))
    assert len(problems) == 1 and fix in problems[0], problems


def test_a_rayjob_without_the_tracking_uri_is_named():
    objects = yaml.safe_load(yaml.safe_dump(OBJECTS))
    [job] = objects["ray-job.train-iris.yaml"]
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    del env["env_vars"]["RAYLIFE_MLFLOW_URI"]
    job["spec"]["runtimeEnvYAML"] = yaml.safe_dump(env)
    [problem] = checks.tracking_problems(objects)
    assert "kuberay/ray-job.train-iris.yaml" in problem and "RAYLIFE_MLFLOW_URI" in problem


def test_a_tracking_role_that_writes_the_store_is_named():
    cluster = yaml.safe_load(yaml.safe_dump(CLUSTER))
    [account] = [
        a
        for a in cluster["iam"]["serviceAccounts"]
        if a["metadata"]["name"] == tracking_server.ACCOUNT
    ]
    account["attachPolicy"]["Statement"][1]["Resource"] = f"arn:aws:s3:::{kuberay.BUCKET}/*"
    [problem] = manifest_checks.tracking_iam_problems(OBJECTS, cluster, kuberay.BUCKET)
    assert "raylife-mlflow" in problem and "mlflow/*" in problem


def test_the_generator_refuses_an_exposed_server(tmp_path, monkeypatch):
    (tmp_path / "eks").mkdir()
    shutil.copy(ROOT / "kuberay" / "eks" / "cluster.yaml", tmp_path / "eks" / "cluster.yaml")
    real = tracking_server.service

    def exposed(server: tracking_server.Server) -> dict[str, Any]:
        service = real(server)
        service["spec"]["type"] = "NodePort"
        return service

    monkeypatch.setattr(tracking_server, "service", exposed)
    with pytest.raises(RaylifeError) as refused:
        kuberay.write(tmp_path, kuberay.load_site(tmp_path))
    assert "\n" not in str(refused.value) and "ClusterIP" in str(refused.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cluster.yaml", "eks"], "wrote files"
