"""Machine checks of the KubeRay manifests: the real schemas, strictly, plus the rules we keep.

KubeRay CRDs (RayCluster/RayJob/RayService, v1.7.0) come from $RAYLIFE_KUBERAY_CRDS, default
../shared/kuberay-crds beside the checkout; other Kubernetes objects are checked with
kubernetes-validate's bundled schemas. Nothing here needs a cluster.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from raylife.deploy import gpu_stack, kuberay
from raylife.serve import config as serve_config

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
CRD_DIR = Path(os.environ.get("RAYLIFE_KUBERAY_CRDS", ROOT.parent / "shared" / "kuberay-crds"))
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
RAY_KINDS = set(CRD_FILES)
MONITORING_KINDS = {"PodMonitor", "ServiceMonitor"}


SITE = kuberay.load_site(KUBERAY, registry=kuberay.REGISTRY)  # whatever RAYLIFE_REGISTRY says
MANIFESTS = kuberay.manifests(SITE)


def _objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in MANIFESTS:
        for obj in yaml.safe_load_all((KUBERAY / name).read_text()):
            out.append((name, obj))
    return out


OBJECTS = _objects()


def _strict(schema: Any) -> Any:
    """OpenAPI v3 schema -> JSON schema that rejects unknown fields (kubectl --validate=strict)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


_VALIDATORS: dict[str, jsonschema.Draft7Validator] = {}


def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    if not CRD_DIR.is_dir():
        pytest.skip(
            f"KubeRay CRDs not found in {CRD_DIR}; set RAYLIFE_KUBERAY_CRDS to a folder with them: "
            "`helm pull kuberay/kuberay-operator --version 1.7.0 --untar` puts them in "
            "kuberay-operator/crds/"
        )
    if kind not in _VALIDATORS:
        # libyaml's safe loader when PyYAML has it: the same objects, ~8x faster on these 1 MB files
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        crd = yaml.load((CRD_DIR / CRD_FILES[kind]).read_text(), Loader=loader)
        [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        _VALIDATORS[kind] = jsonschema.Draft7Validator(
            _strict(version["schema"]["openAPIV3Schema"])
        )
    return _VALIDATORS[kind]


def crd_errors(obj: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in crd_validator(obj["kind"]).iter_errors(obj)
    ]


# ---- the files are what the generator renders ---------------------------------------------------


RENDERED = kuberay.render(SITE)


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_generated_files_are_fresh(name):
    assert (KUBERAY / name).read_text() == RENDERED[name], (
        f"kuberay/{name} is stale: make kuberay-manifests"
    )


def test_every_yaml_file_in_kuberay_is_generated():
    assert {p.name for p in KUBERAY.glob("*.yaml")} == set(MANIFESTS)


def test_naming_follows_kuberay():
    for name, obj in OBJECTS:
        if obj["kind"] in RAY_KINDS:
            kind, variant = name.removesuffix(".yaml").split(".", 1)
            assert kind in {"ray-cluster", "ray-job", "ray-service"}
            assert obj["metadata"]["name"] == f"{obj['kind'].lower()}-{variant}"


# ---- schemas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,obj",
    [(n, o) for n, o in OBJECTS if o["kind"] in RAY_KINDS],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_kuberay_objects_validate_strictly_against_the_crds(name, obj):
    assert crd_errors(obj) == []


def test_a_broken_manifest_is_rejected():
    broken = yaml.safe_load((ROOT / "tests" / "fixtures" / "ray-job.broken.yaml").read_text())
    errors = "\n".join(crd_errors(broken))
    assert "retryForever" in errors  # unknown field
    assert "imagePullPolicyy" in errors  # unknown field deep in the pod template
    assert "shutdownAfterJobFinishes" in errors and "boolean" in errors  # wrong type


@pytest.mark.parametrize(
    "name,obj",
    [(n, o) for n, o in OBJECTS if o["kind"] not in RAY_KINDS | MONITORING_KINDS],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_kubernetes_objects_validate_strictly(name, obj):
    import kubernetes_validate

    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_monitors_are_well_formed():
    monitors = [o for _, o in OBJECTS if o["kind"] in MONITORING_KINDS]
    assert {m["kind"] for m in monitors} == {"PodMonitor"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["selector"]["matchLabels"]["ray.io/node-type"] in {"head", "worker"}
        assert all(e["port"].endswith("metrics") for e in monitor["spec"]["podMetricsEndpoints"])


# ---- what the manifests run ------------------------------------------------------------------------


def test_service_config_is_the_rendered_eks_config_and_valid():
    [service] = [o for _, o in OBJECTS if o["kind"] == "RayService"]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert config == serve_config.render("eks")
    serve_config.validate(config)  # Ray Serve's schema, imports, typed builder args


def _entrypoints() -> list[str]:
    return sorted({o["spec"]["entrypoint"] for _, o in OBJECTS if o["kind"] == "RayJob"})


@functools.cache
def _help(module: str) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE --help` in a fresh process, once per module (10 jobs share 3 modules)."""
    return subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # a Python process per job module (~4 s each): in make test, not make test-fast
@pytest.mark.parametrize("entrypoint", _entrypoints())
def test_job_entrypoints_exist_and_answer_help(entrypoint):
    argv = entrypoint.split()
    assert argv[:2] == ["python", "-m"], "entrypoints run a module of the image's Python"
    done = _help(argv[2])
    assert done.returncode == 0, done.stderr
    flags = [a for a in argv[3:] if a.startswith("--")]
    assert all(flag in done.stdout for flag in flags), f"unknown flags in {entrypoint}"


# ---- rules we keep ---------------------------------------------------------------------------------


def _pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]
    cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig")
    if not cluster:
        return []
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [group["template"] for group in cluster["workerGroupSpecs"]]
    if "submitterPodTemplate" in spec:
        templates.append(spec["submitterPodTemplate"])
    return templates


RAY_OBJECTS = [o for _, o in OBJECTS if o["kind"] in RAY_KINDS]


def test_versions_agree_everywhere():
    import ray

    assert ray.__version__ == kuberay.RAY_VERSION
    for obj in RAY_OBJECTS:
        cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
        assert cluster["rayVersion"] == ray.__version__
        for template in _pod_templates(obj):
            for container in template["spec"]["containers"]:
                if container["name"].startswith("ray-"):
                    assert f"-ray{ray.__version__}-" in container["image"], container["image"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f"torch=={gpu_stack.TORCH_VERSION}" in pyproject
    assert f"ray[train,tune,serve]=={ray.__version__}" in pyproject
    for dockerfile in sorted((KUBERAY / "docker").glob("Dockerfile.*")):
        [base] = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.M)[:1]
        assert base.startswith(f"rayproject/ray:{ray.__version__}-"), f"{dockerfile}: {base}"


def test_pods_meet_the_restricted_standard_and_pin_memory():
    for obj in RAY_OBJECTS:
        for template in _pod_templates(obj):
            pod = template["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for container in pod["containers"]:
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False
                assert security["capabilities"]["drop"] == ["ALL"]
                assert security["runAsNonRoot"] is True
                resources = container["resources"]
                assert resources["requests"]["memory"] == resources["limits"]["memory"]
                assert "auth_token" not in str(container.get("env", ""))
        cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
        assert cluster["authOptions"]["mode"] == "token"  # the token comes from a Secret, by name


def test_gpu_workloads_request_gpus_and_tolerate_the_taint():
    gpu_templates = 0
    for obj in RAY_OBJECTS:
        for template in _pod_templates(obj):
            pod = template["spec"]
            wants_gpu = any(
                "nvidia.com/gpu" in c["resources"].get("limits", {}) for c in pod["containers"]
            )
            tolerates = any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
            assert wants_gpu == tolerates == (pod["nodeSelector"]["raylife.io/node-group"] == "gpu")
            if wants_gpu:
                gpu_templates += 1
                assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
    assert gpu_templates >= 2  # the GPU training job and the RayService's GPU group
    [gpu_job] = [o for o in RAY_OBJECTS if o["metadata"]["name"] == "rayjob-train-mnist-gpu"]
    assert "--use-gpu" in gpu_job["spec"]["entrypoint"]


def test_jobs_clean_up_and_have_deadlines():
    for obj in (o for o in RAY_OBJECTS if o["kind"] == "RayJob"):
        spec = obj["spec"]
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
        assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 1
        runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert set(runtime_env) == {"env_vars"}, "no pip/conda at pod start: bake it in the image"
        assert runtime_env["env_vars"]["RAYLIFE_STORE"].startswith("s3://")


def test_service_autoscales_with_a_zero_cpu_head():
    [service] = [o for o in RAY_OBJECTS if o["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["version"] == "v2"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert (
        groups["cpu"]["minReplicas"] >= 1
        and groups["cpu"]["maxReplicas"] > groups["cpu"]["minReplicas"]
    )
    assert groups["gpu"]["minReplicas"] == 0
    assert service["spec"]["upgradeStrategy"]["type"] == "NewCluster"


def test_network_policy_admits_serve_operator_and_ray_itself():
    [policy] = [
        o
        for _, o in OBJECTS
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "raylife-ray"
    ]
    rules = policy["spec"]["ingress"]
    assert any(
        r["from"] == [{"podSelector": {"matchLabels": kuberay.PART_OF}}] and "ports" not in r
        for r in rules
    )
    serve = [r for r in rules if {"protocol": "TCP", "port": 8000} in r.get("ports", [])]
    assert any("ipBlock" in r["from"][0] for r in serve)
    operator = [r for r in rules if "kuberay-system" in str(r["from"])]
    assert operator and {"protocol": "TCP", "port": 8265} in operator[0]["ports"]


# ---- cluster, operator and image files --------------------------------------------------------------


def test_both_images_exist_and_install_raylife_at_build_time():
    for variant in ("cpu", "gpu"):
        text = (KUBERAY / "docker" / f"Dockerfile.{variant}").read_text()
        [base] = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
        assert base.endswith(f"-py311-{variant}"), base
        assert "pip install --no-cache-dir -c constraints.txt ." in text
        assert "torch==${TORCH_VERSION}" in text  # the ARG gpu_stack checks
        assert re.search(r"^USER 1000", text, flags=re.M), "images run as the non-root ray user"


def test_eksctl_cluster_has_cpu_gpu_groups_oidc_and_bucket_only_roles():
    config = yaml.safe_load((KUBERAY / "eks" / "cluster.yaml").read_text())
    assert config["apiVersion"] == "eksctl.io/v1alpha5" and config["kind"] == "ClusterConfig"
    assert config["iam"]["withOIDC"] is True
    groups = {g["name"]: g for g in config["managedNodeGroups"]}
    assert groups["cpu"]["labels"]["raylife.io/node-group"] == "cpu"
    gpu = groups["gpu"]
    assert gpu["minSize"] == 0 and gpu["labels"]["raylife.io/node-group"] == "gpu"
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in gpu["taints"])
    assert any(
        "cluster-autoscaler/node-template/resources/nvidia.com/gpu" in k for k in gpu["tags"]
    )
    # Every label a GPU pod selects is also a node-template tag: else no scale-up from zero.
    for key, value in gpu["labels"].items():
        assert gpu["tags"][f"k8s.io/cluster-autoscaler/node-template/label/{key}"] == value
    bucket = f"arn:aws:s3:::{kuberay.BUCKET}"
    for account in config["iam"]["serviceAccounts"]:
        if account["metadata"]["name"] not in {kuberay.TRAIN_ACCOUNT, kuberay.SERVE_ACCOUNT}:
            continue
        statements = account["attachPolicy"]["Statement"]
        resources = {
            r
            for s in statements
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        }
        assert all(r == bucket or r.startswith(f"{bucket}/") for r in resources), resources
        assert all(a.startswith("s3:") for s in statements for a in s["Action"])


def test_operator_values_pin_the_operator_and_are_restricted():
    values = yaml.safe_load((KUBERAY / "helm" / "kuberay-operator.values.yaml").read_text())
    assert values["image"]["tag"] == "v1.7.0"
    resources = values["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert values["securityContext"]["allowPrivilegeEscalation"] is False
    assert values["nodeSelector"] == {"raylife.io/node-group": "cpu"}


def test_image_dependencies_are_pinned_to_the_tested_versions():
    import ray

    lines = (KUBERAY / "docker" / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))
    assert pins["ray"] == ray.__version__
    assert {"fastapi", "pandas", "pydantic", "scikit-learn", "pyarrow"} <= set(pins)
    assert pins["torch"] == gpu_stack.TORCH_VERSION  # no local build: matches +cpu and +cu130
    assert not any(name.startswith(("nvidia-", "triton")) for name in pins)


SECRET_NAME = re.compile(
    r"(TOKEN|PASSWORD|SECRET|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)", re.IGNORECASE
)
SECRET_VALUE = re.compile(
    r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|ghp_[0-9A-Za-z]{20,})"
)


def _env_entries(node: Any) -> list[dict[str, Any]]:
    """Every container `env:` entry anywhere in a manifest (including serveConfigV2 text)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                found += [e for e in value if isinstance(e, dict)]
            else:
                found += _env_entries(value)
    elif isinstance(node, list):
        for item in node:
            found += _env_entries(item)
    return found


def test_no_secret_values_in_manifests():
    """Secrets are referenced by name (Secret, IRSA), never written into a manifest."""
    for path in sorted(KUBERAY.rglob("*")):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".json"}:
            assert not SECRET_VALUE.search(path.read_text()), f"{path}: a credential-like value"
    for name, obj in OBJECTS:
        assert obj.get("kind") != "Secret" or not (obj.get("data") or obj.get("stringData")), name
        for entry in _env_entries(obj):
            if SECRET_NAME.search(str(entry.get("name", ""))):
                assert "value" not in entry, f"{name}: env {entry['name']} carries a literal value"
