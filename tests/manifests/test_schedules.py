"""Scheduled drift monitoring on EKS: kuberay/cron-job.monitor-<model>.yaml (a CronJob whose kubectl
pod creates a RayJob from a template in the same file), kuberay/cron-job.retrain-<model>.yaml (the
same, running `raylife retrain <model> --when-drifted` daily, table models only) and
kuberay/rbac.scheduler.yaml.

KubeRay v1.7.0 has no RayCronJob (its CRDs: RayCluster, RayJob, RayService), hence the CronJob.
Every rule is checked on the committed files, and each check is shown to fail on the broken form.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from raylife.catalog.lookup import get_spec, model_names
from raylife.deploy import checks, kuberay, schedules
from raylife.errors import RaylifeError
from raylife_dev import manifest_checks
from tests.manifests.test_manifests import CRD_DIR, CRD_FILES, crd_errors

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
OBJECTS = manifest_checks.load(KUBERAY)
CRON_FILES = {n: objs for n, objs in OBJECTS.items() if n.startswith("cron-job.")}
TEMPLATES = schedules.templates(CRON_FILES)
CLUSTER = yaml.safe_load((KUBERAY / "eks" / "cluster.yaml").read_text())
TABLE_MODELS = [m for m in model_names() if get_spec(m).input_kind != "image"]
IMAGE_MODELS = sorted(set(model_names()) - set(TABLE_MODELS))


def _no(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


def _one(name: str, kind: str, objects: dict[str, list[dict[str, Any]]] = OBJECTS) -> dict:
    [obj] = [o for o in objects[name] if o["kind"] == kind]
    return obj


def _template(name: str) -> dict[str, Any]:
    return yaml.safe_load(_one(name, "ConfigMap")["data"][schedules.TEMPLATE_KEY])


# ---- why a CronJob -----------------------------------------------------------------------------


def test_kuberay_has_no_raycronjob_so_a_cronjob_creates_the_rayjobs():
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRDs not found in {CRD_DIR}; set RAYLIFE_KUBERAY_CRDS")
    kinds = {
        yaml.safe_load(p.read_text().split("\nspec:", 1)[0])["metadata"]["name"]
        for p in CRD_DIR.glob("*.yaml")
    }
    assert kinds == {f"{k.lower()}s.ray.io" for k in CRD_FILES}, kinds
    rayjob_spec = (CRD_DIR / CRD_FILES["RayJob"]).read_text()
    assert not re.search(r"^\s+schedule:", rayjob_spec, flags=re.M), "RayJob has a schedule now"


# ---- one per declared model, valid, named ----------------------------------------------------


def test_a_monitor_per_declared_model_and_a_retrain_per_table_model():
    assert IMAGE_MODELS and TABLE_MODELS  # the tutorial catalogue has both kinds
    assert sorted(CRON_FILES) == sorted(
        [
            *(f"cron-job.monitor-{m}.yaml" for m in model_names()),
            *(f"cron-job.retrain-{m}.yaml" for m in TABLE_MODELS),
        ]
    )
    for verb, models, cron_text in [
        ("monitor", model_names(), schedules.MONITOR_SCHEDULE),
        ("retrain", TABLE_MODELS, schedules.RETRAIN_SCHEDULE),
    ]:
        for model in models:
            name = f"cron-job.{verb}-{model}.yaml"
            assert [o["kind"] for o in CRON_FILES[name]] == ["ConfigMap", "CronJob"]
            cron = _one(name, "CronJob")
            assert cron["apiVersion"] == "batch/v1"
            assert cron["metadata"]["name"] == f"cronjob-{verb}-{model}"
            assert cron["spec"]["schedule"] == cron_text


def test_image_models_get_no_retrain_schedule():
    """`raylife retrain` takes table models only: an image model's schedule would fail daily."""
    for model in IMAGE_MODELS:
        assert f"cron-job.retrain-{model}.yaml" not in OBJECTS
        assert f"cron-job.monitor-{model}.yaml" in OBJECTS


@pytest.mark.parametrize("name", sorted([*CRON_FILES, "rbac.scheduler.yaml"]))
def test_cronjobs_and_rbac_validate_against_kubernetes(name):
    for obj in OBJECTS[name]:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_a_broken_cronjob_is_rejected_by_the_schema():
    cron = copy.deepcopy(_one("cron-job.monitor-iris.yaml", "CronJob"))
    cron["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError, match="concurrencyPolicyy"):
        kubernetes_validate.validate(cron, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name", sorted(CRON_FILES))
def test_the_embedded_rayjob_validates_against_the_crd(name):
    assert crd_errors(_template(name)) == []


@pytest.mark.parametrize("name", ["cron-job.monitor-iris.yaml", "cron-job.retrain-iris.yaml"])
def test_a_broken_template_is_rejected_by_the_crd(name):
    job = _template(name)
    job["spec"]["shutdownAfterJobFinishes"] = "yes"
    job["spec"]["schedule"] = "17 * * * *"  # what a RayCronJob would take; RayJob has none
    errors = "\n".join(crd_errors(job))
    assert "shutdownAfterJobFinishes" in errors and "schedule" in errors, errors


def test_a_broken_retrain_cronjob_is_rejected_by_the_schema():
    cron = copy.deepcopy(_one("cron-job.retrain-iris.yaml", "CronJob"))
    cron["spec"]["jobTemplate"]["spec"]["backoffLimitt"] = 0
    with pytest.raises(kubernetes_validate.ValidationError, match="backoffLimitt"):
        kubernetes_validate.validate(cron, kubernetes_validate.latest_version(), strict=True)


# ---- the RayJob each run creates ---------------------------------------------------------------


def test_the_template_runs_the_training_jobs_image_and_ray():
    train = _one("ray-job.train-iris.yaml", "RayJob")["spec"]["rayClusterSpec"]
    for name in CRON_FILES:
        cluster = _template(name)["spec"]["rayClusterSpec"]
        assert cluster["rayVersion"] == train["rayVersion"] == kuberay.RAY_VERSION
        images = {
            c["name"]: c["image"]
            for _, t in checks.pod_templates(_template(name))
            for c in t["spec"]["containers"]
        }
        assert (
            images["ray-head"]
            == train["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
        )
        assert cluster["authOptions"] == train["authOptions"]


def test_each_run_is_a_new_rayjob_that_cleans_up_and_names_its_model():
    for model in model_names():
        job = _template(f"cron-job.monitor-{model}.yaml")
        meta, spec = job["metadata"], job["spec"]
        assert "name" not in meta and meta["generateName"] == f"rayjob-monitor-{model}-"
        assert meta["labels"][schedules.SCHEDULE_LABEL] == f"monitor-{model}"
        assert spec["entrypoint"].split()[:5] == ["python", "-m", "raylife.cli", "monitor", model]
        assert "--window-requests" not in spec["entrypoint"]  # the declaration's [monitor] decides
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
        # Exit 3 (drift) fails the Ray job: no retry on a new cluster; the next run is the retry.
        assert spec["backoffLimit"] == 0
        for _, template in checks.pod_templates(job):
            assert (
                template["spec"]["serviceAccountName"] == kuberay.TRAIN_ACCOUNT
            )  # reads the store


def test_each_retrain_run_is_a_new_rayjob_sized_like_the_tune_job():
    for model in TABLE_MODELS:
        job = _template(f"cron-job.retrain-{model}.yaml")
        meta, spec = job["metadata"], job["spec"]
        assert "name" not in meta and meta["generateName"] == f"rayjob-retrain-{model}-"
        assert meta["labels"][schedules.SCHEDULE_LABEL] == f"retrain-{model}"
        assert spec["entrypoint"] == f"python -m raylife.cli retrain {model} --when-drifted"
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
        # Exit 2 (no report, too little feedback) fails it; the next day's run is the retry.
        assert spec["backoffLimit"] == 0
        tune = _one(f"ray-job.tune-{model}.yaml", "RayJob")
        # A sweep: the tune job's CPU workers and its deadline (the sweep driver's stall allowance).
        assert spec["rayClusterSpec"] == tune["spec"]["rayClusterSpec"]
        assert spec["activeDeadlineSeconds"] == tune["spec"]["activeDeadlineSeconds"]
        assert (
            meta["annotations"][kuberay.deadlines.ANNOTATION]
            == tune["metadata"]["annotations"][kuberay.deadlines.ANNOTATION]
        )
        for _, template in checks.pod_templates(job):
            assert template["spec"]["serviceAccountName"] == kuberay.TRAIN_ACCOUNT


def test_a_run_ends_before_the_next_one_starts():
    assert schedules.MONITOR_SCHEDULE.split()[1:] == ["*", "*", "*", "*"]  # hourly
    minute, hour, *every_day = schedules.RETRAIN_SCHEDULE.split()
    assert every_day == ["*", "*", "*"] and minute.isdigit() and hour.isdigit()  # daily
    for model in model_names():
        assert _template(f"cron-job.monitor-{model}.yaml")["spec"]["activeDeadlineSeconds"] < 3600
    for model in TABLE_MODELS:
        retrain = _template(f"cron-job.retrain-{model}.yaml")["spec"]
        assert retrain["activeDeadlineSeconds"] < 24 * 3600


def test_the_retrain_starts_after_that_hours_monitor_run_has_ended():
    """It reads the monitor's latest report: the one the same hour's run wrote, if it ran."""
    minute = int(schedules.RETRAIN_SCHEDULE.split()[0])
    monitor_minute = int(schedules.MONITOR_SCHEDULE.split()[0])
    deadline_min = (
        max(
            _template(f"cron-job.monitor-{m}.yaml")["spec"]["activeDeadlineSeconds"]
            for m in model_names()
        )
        / 60
    )
    assert minute >= monitor_minute + deadline_min


def test_the_templates_pass_every_rayjob_rule():
    """What `make kuberay-manifests` and the manifest tests check on every RayJob, on these too."""
    objects = {**OBJECTS, **TEMPLATES}
    groups = kuberay.load_site(KUBERAY).groups()
    _no(checks.fit_problems(TEMPLATES, groups))
    _no(checks.image_problems(TEMPLATES))
    _no(checks.tracking_problems(objects))
    _no(checks.service_account_problems(TEMPLATES))
    _no(checks.deadline_problems(TEMPLATES))
    _no(checks.log_shipping_problems(objects))
    _no(manifest_checks.token_problems(objects))
    _no(manifest_checks.iam_problems(TEMPLATES, CLUSTER, kuberay.BUCKET))
    _no(manifest_checks.observability_problems(objects))


def test_the_generator_checks_the_templates_like_any_rayjob(tmp_path, monkeypatch):
    (tmp_path / "eks").mkdir()
    shutil.copy(KUBERAY / "eks" / "cluster.yaml", tmp_path / "eks" / "cluster.yaml")
    monkeypatch.setattr(kuberay, "MONITOR_BUDGET", kuberay.deadlines.JobBudget(600, 60, 0))
    with pytest.raises(RaylifeError, match="rayjob-monitor-.*watchdog may wait"):
        kuberay.write(tmp_path, kuberay.load_site(tmp_path))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cluster.yaml", "eks"]


def test_the_generator_checks_the_retrain_templates_deadline(tmp_path, monkeypatch):
    (tmp_path / "eks").mkdir()
    shutil.copy(KUBERAY / "eks" / "cluster.yaml", tmp_path / "eks" / "cluster.yaml")
    monkeypatch.setattr(kuberay, "RETRAIN_BUDGET", kuberay.deadlines.JobBudget(600, 60, 0))
    with pytest.raises(RaylifeError, match="rayjob-retrain-.*watchdog may wait"):
        kuberay.write(tmp_path, kuberay.load_site(tmp_path))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cluster.yaml", "eks"]


# ---- the CronJob and its kubectl pod -----------------------------------------------------------


def test_the_schedules_pass_their_rules():
    _no(schedules.problems(OBJECTS))


def test_the_kubectl_pod_is_restricted_and_creates_from_the_mounted_template():
    for name in CRON_FILES:
        cron = _one(name, "CronJob")
        spec = cron["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] > 0
        assert 1 <= spec["successfulJobsHistoryLimit"] <= 3 >= spec["failedJobsHistoryLimit"] >= 1
        job = spec["jobTemplate"]["spec"]
        assert job["ttlSecondsAfterFinished"] > 0
        pod = job["template"]["spec"]
        assert pod["securityContext"] == kuberay.pod_security()
        [kubectl] = pod["containers"]
        assert kubectl["securityContext"] == {
            **kuberay.container_security(),
            "readOnlyRootFilesystem": True,
        }
        assert [*kubectl["command"], *kubectl["args"]][:4] == [
            "kubectl",
            "create",
            "--filename",
            f"{schedules.TEMPLATE_DIR}/{schedules.TEMPLATE_KEY}",
        ]
        [volume] = [v for v in pod["volumes"] if v["name"] == "template"]
        assert volume["configMap"]["name"] == _one(name, "ConfigMap")["metadata"]["name"]
        resources = kubectl["resources"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_the_kubectl_image_is_a_pinned_release_pulled_through_ecr():
    host = kuberay.load_site(KUBERAY, registry=kuberay.REGISTRY).registry.split("/", 1)[0]
    for name in CRON_FILES:
        [kubectl] = _one(name, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
            "containers"
        ]
        image = kubectl["image"]
        assert image.startswith(f"{host}/{schedules.PULL_THROUGH_PREFIX}/kubectl:"), image
        assert schedules.PINNED_KUBECTL.search(image) and not image.endswith(":latest"), image
    # kubectl talks to the cluster's API server: within one minor of its Kubernetes version.
    major, minor = (int(x) for x in str(CLUSTER["metadata"]["version"]).split("."))
    k_major, k_minor = (int(x) for x in schedules.KUBECTL_VERSION.lstrip("v").split(".")[:2])
    assert k_major == major and abs(k_minor - minor) <= 1


def test_a_digest_pins_the_kubectl_image_when_given():
    site = kuberay.load_site(KUBERAY, kubectl_digest="sha256:" + "cd" * 32)
    image = kuberay.kubectl_image(site)
    assert image.endswith(f"/kubectl:{schedules.KUBECTL_VERSION}@sha256:{'cd' * 32}"), image
    assert schedules.PINNED_KUBECTL.search(image)


def test_the_kubectl_pod_mounts_the_schedulers_token_and_is_no_training_pod():
    for name in CRON_FILES:
        pod = _one(name, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]
        assert pod["spec"]["automountServiceAccountToken"] is True
        assert pod["spec"]["serviceAccountName"] == schedules.ACCOUNT
        # The MLflow server's NetworkPolicy admits part-of pods without this label: not this one.
        assert pod["metadata"]["labels"]["raylife.io/workload"] == "scheduler"


# ---- least RBAC --------------------------------------------------------------------------------


def test_the_scheduler_may_create_rayjobs_and_nothing_else():
    rbac = {o["kind"]: o for o in OBJECTS["rbac.scheduler.yaml"]}
    assert set(rbac) == {"ServiceAccount", "Role", "RoleBinding"}
    assert rbac["ServiceAccount"]["automountServiceAccountToken"] is False
    assert rbac["Role"]["rules"] == [
        {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}
    ]
    assert rbac["RoleBinding"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": rbac["Role"]["metadata"]["name"],
    }
    assert rbac["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": schedules.ACCOUNT, "namespace": kuberay.NAMESPACE}
    ]
    assert not [o for items in OBJECTS.values() for o in items if o["kind"].startswith("Cluster")]
    _no(schedules.rbac_problems(OBJECTS))


def _broken(change) -> list[str]:
    objects = copy.deepcopy(OBJECTS)
    change(objects)
    return schedules.problems(objects)


def _role(objects) -> dict[str, Any]:
    return _one("rbac.scheduler.yaml", "Role", objects)


def _cron(objects) -> dict[str, Any]:
    return _one("cron-job.monitor-iris.yaml", "CronJob", objects)


def _kubectl(objects) -> dict[str, Any]:
    return _cron(objects)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def _set_template(objects, change, name: str = "cron-job.monitor-iris.yaml") -> None:
    config = _one(name, "ConfigMap", objects)
    job = yaml.safe_load(config["data"][schedules.TEMPLATE_KEY])
    change(job)
    config["data"][schedules.TEMPLATE_KEY] = yaml.safe_dump(job)


RETRAIN = "cron-job.retrain-iris.yaml"

BROKEN = {
    "pods": (lambda o: _role(o)["rules"][0]["resources"].append("pods"), "grant exactly"),
    "wildcard verb": (lambda o: _role(o)["rules"][0].update(verbs=["*"]), "grant exactly"),
    "secrets rule": (
        lambda o: _role(o)["rules"].append(
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
        ),
        "grant exactly",
    ),
    "rayclusters": (
        lambda o: _role(o)["rules"][0]["resources"].append("rayclusters"),
        "grant exactly",
    ),
    "token on the account": (
        lambda o: _one("rbac.scheduler.yaml", "ServiceAccount", o).pop(
            "automountServiceAccountToken"
        ),
        "automountServiceAccountToken: false",
    ),
    "a second binding": (
        lambda o: o["rbac.scheduler.yaml"].append(
            {
                **_one("rbac.scheduler.yaml", "RoleBinding", o),
                "kind": "ClusterRoleBinding",
                "roleRef": {"kind": "ClusterRole", "name": "edit"},
            }
        ),
        "bound 2 times",
    ),
    "Allow": (lambda o: _cron(o)["spec"].update(concurrencyPolicy="Allow"), "use Forbid"),
    "no starting deadline": (
        lambda o: _cron(o)["spec"].pop("startingDeadlineSeconds"),
        "startingDeadlineSeconds",
    ),
    "latest": (
        lambda o: _kubectl(o).update(image="registry.k8s.io/kubectl:latest"),
        "pin a release",
    ),
    "no tag": (lambda o: _kubectl(o).update(image="registry.k8s.io/kubectl"), "pin a release"),
    "apply": (lambda o: _kubectl(o).update(command=["kubectl", "apply", "-f", "x"]), "apply"),
    "a fixed name": (
        lambda o: _set_template(o, lambda j: j["metadata"].update(name="rayjob-monitor-iris")),
        "generateName",
    ),
    "another model": (
        lambda o: _set_template(
            o, lambda j: j["spec"].update(entrypoint="python -m raylife.cli monitor mnist")
        ),
        "not `raylife monitor iris`",
    ),
    "a monitor retried": (
        lambda o: _set_template(o, lambda j: j["spec"].update(backoffLimit=2)),
        "backoffLimit is 2",
    ),
    "retrain without --when-drifted": (
        lambda o: _set_template(
            o,
            lambda j: j["spec"].update(entrypoint="python -m raylife.cli retrain iris"),
            RETRAIN,
        ),
        "not `raylife retrain iris --when-drifted`",
    ),
    "retrain of another model": (
        lambda o: _set_template(
            o,
            lambda j: j["spec"].update(
                entrypoint="python -m raylife.cli retrain boston --when-drifted"
            ),
            RETRAIN,
        ),
        "not `raylife retrain iris --when-drifted`",
    ),
    "a retrain schedule that monitors": (
        lambda o: _set_template(
            o, lambda j: j["spec"].update(entrypoint="python -m raylife.cli monitor iris"), RETRAIN
        ),
        "not `raylife retrain iris --when-drifted`",
    ),
    "a retrain retried": (
        lambda o: _set_template(o, lambda j: j["spec"].update(backoffLimit=1), RETRAIN),
        "backoffLimit is 1",
    ),
    "an unknown schedule": (
        lambda o: _one(RETRAIN, "CronJob", o)["metadata"].update(name="cronjob-sweep-iris"),
        "no schedule of raylife.deploy.schedules.VERBS",
    ),
    "no template": (
        lambda o: _cron(o)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"][0].update(
            configMap={"name": "elsewhere"}
        ),
        "mounts no RayJob template",
    ),
}


@pytest.mark.parametrize("change,fix", BROKEN.values(), ids=list(BROKEN))
def test_each_schedule_rule_fails_on_the_broken_form(change, fix):
    found = _broken(change)
    assert any(fix in p for p in found), found


def test_the_generator_refuses_a_wider_role(tmp_path, monkeypatch):
    (tmp_path / "eks").mkdir()
    shutil.copy(KUBERAY / "eks" / "cluster.yaml", tmp_path / "eks" / "cluster.yaml")
    wide = [{"apiGroups": ["ray.io"], "resources": ["rayjobs", "rayclusters"], "verbs": ["*"]}]
    real = schedules.rbac
    monkeypatch.setattr(
        schedules,
        "rbac",
        lambda ns, labels: [
            {**o, "rules": wide} if o["kind"] == "Role" else o for o in real(ns, labels)
        ],
    )
    with pytest.raises(RaylifeError, match="grant exactly"):
        kuberay.write(tmp_path, kuberay.load_site(tmp_path))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cluster.yaml", "eks"]


# ---- the command it runs -----------------------------------------------------------------------


def test_the_monitor_verb_takes_the_flags_the_rayjob_passes():
    from raylife import cli

    [verbs] = cli.build_parser()._subparsers._group_actions  # type: ignore[union-attr]
    if "monitor" not in (verbs.choices or {}):
        pytest.skip("`raylife monitor` is not registered in this tree yet")
    parser = verbs.choices["monitor"]
    entry = schedules.monitor_entrypoint("iris").split()
    assert entry[:4] == ["python", "-m", "raylife.cli", "monitor"]
    parsed = parser.parse_args(entry[4:])
    assert parsed.model == "iris" and parsed.window_requests is None


def test_the_retrain_verb_takes_the_flags_the_rayjob_passes():
    from raylife import cli

    [verbs] = cli.build_parser()._subparsers._group_actions  # type: ignore[union-attr]
    if "retrain" not in (verbs.choices or {}):
        pytest.skip("`raylife retrain` is not registered in this tree yet")
    parser = verbs.choices["retrain"]
    entry = schedules.retrain_entrypoint("iris").split()
    assert entry[:4] == ["python", "-m", "raylife.cli", "retrain"]
    parsed = parser.parse_args(entry[4:])
    assert parsed.model == "iris" and parsed.when_drifted is True
