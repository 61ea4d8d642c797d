"""The images build, drains are allowed, health and logs work as Kubernetes and Fluent Bit behave.

One test per finding; each fails with one line per problem, naming the fix. Like
test_first_contact.py they read the files under $RAYLIFE_CHECK_ROOT (default: this checkout), so
`git archive <rev> kuberay docs Makefile | tar -x -C /tmp/old` shows what they catch on an older
tree. The KubeRay CRDs come from $RAYLIFE_KUBERAY_CRDS (default ../shared/kuberay-crds).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from raylife.deploy import checks, constraints, kuberay, preflight
from raylife_dev import image_rehearsal, manifest_checks

CHECKOUT = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("RAYLIFE_CHECK_ROOT", CHECKOUT))
CRD_DIR = Path(os.environ.get("RAYLIFE_KUBERAY_CRDS", CHECKOUT.parent / "shared" / "kuberay-crds"))
OBJECTS = manifest_checks.load(ROOT / "kuberay")
DOCS = (ROOT / "docs" / "deploy-eks.md").read_text()
CONSTRAINTS = ROOT / "kuberay" / "docker" / "constraints.txt"


def _no(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


# ---- 1. the images build -----------------------------------------------------------------------


def test_constraints_pin_the_runtime_dependencies_and_satisfy_every_requirement():
    _no(constraints.pin_errors(CONSTRAINTS.read_text()))


def test_both_dockerfiles_install_the_same_python_layer():
    layers = {
        v: image_rehearsal.layer((ROOT / "kuberay" / "docker" / f"Dockerfile.{v}").read_text())
        for v in ("cpu", "gpu")
    }
    problems = []
    for variant, layer in layers.items():
        extras = [e for e in constraints.IMAGE_EXTRAS if not any(e in c.split() for c in layer.pip)]
        if not layer.pip or extras:
            problems.append(
                f"Dockerfile.{variant}: its pip line does not install {extras or 'raylife'} "
                "beside raylife (constraints.IMAGE_EXTRAS)"
            )
        if not layer.smoke:
            problems.append(f"Dockerfile.{variant}: no `python -c` smoke after the install")
    if layers["cpu"].pip != layers["gpu"].pip:
        problems.append("Dockerfile.cpu and .gpu install raylife differently; keep one pip line")
    _no(problems)


def _index_url() -> str:
    configured = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return os.environ.get("PIP_INDEX_URL") or configured or "https://pypi.org/simple"


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/pip/", timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.slow  # ~15 s: pip resolves the whole closure against the registry
def test_the_resolver_accepts_the_constraints():
    """`pip install --dry-run -c constraints.txt . boto3`, as the Dockerfiles run it, in this
    environment (torch is already installed, so no resolver ever picks a torch build)."""
    index = _index_url()
    if not _reachable(index):
        pytest.skip(f"package registry {index} unreachable: resolver check skipped")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "-c",
            str(CONSTRAINTS),
            str(CHECKOUT),
            *constraints.IMAGE_EXTRAS,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert done.returncode == 0, "pip: " + " | ".join(errors or done.stderr.splitlines()[-3:])


# ---- 2. drains ---------------------------------------------------------------------------------


def test_disruption_budgets_allow_drains_of_pods_owned_by_a_raycluster():
    path = CRD_DIR / "ray.io_rayclusters.yaml"
    if not path.is_file():
        pytest.skip(f"KubeRay CRDs not found in {CRD_DIR}; set RAYLIFE_KUBERAY_CRDS")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD is 17,000 lines
    owner_scales = manifest_checks.has_scale_subresource(yaml.load(path.read_text(), Loader=loader))
    _no(checks.disruption_budget_problems(OBJECTS, owner_scales))


# ---- 2. health ---------------------------------------------------------------------------------


def test_the_alb_health_check_is_what_each_proxy_answers_itself():
    _no(checks.health_check_problems(OBJECTS))


# ---- 2. logs -----------------------------------------------------------------------------------


def test_every_ray_log_file_is_shipped_from_its_first_line():
    _no(checks.log_shipping_problems(OBJECTS))


def test_the_access_log_is_written_where_it_is_enabled():
    _no(checks.access_log_problems(OBJECTS))


# ---- 2. accounts, images, spread ---------------------------------------------------------------


def test_only_the_head_carries_the_autoscalers_kubernetes_token():
    _no(checks.service_account_problems(OBJECTS))


def test_sidecar_images_are_pinned_by_digest_and_pulled_through_ecr():
    problems = checks.image_problems(OBJECTS)
    for name, obj in OBJECTS.items():
        for o in obj:
            for role, template in checks.pod_templates(o):
                images = [c["image"] for c in template["spec"]["containers"]]
                hosts = {i.split("/", 1)[0] for i in images}
                if len(hosts) > 1:
                    problems.append(
                        f"kuberay/{name}: {role}: images from {sorted(hosts)}; pull the sidecar "
                        "through the ECR pull-through cache of the images' registry"
                    )
    _no(problems)


def test_topology_spread_counts_one_ray_cluster_at_a_time():
    _no(checks.spread_problems(OBJECTS))


def test_the_tracking_volume_and_its_node_group_share_one_zone():
    cluster = yaml.safe_load((ROOT / "kuberay" / "eks" / "cluster.yaml").read_text())
    _no(manifest_checks.volume_zone_problems(OBJECTS, cluster))


# ---- 2. the guide: rotation and placeholders ---------------------------------------------------


def _section(title: str) -> str:
    start = DOCS.index(title)
    end = DOCS.find("\n## ", start + 1)
    return DOCS[start : end if end > 0 else None]


def test_token_rotation_waits_until_the_new_cluster_serves():
    rotation = _section("## Rotating the Ray tokens")
    problems = []
    if "UpgradeInProgress=False" in rotation:
        problems.append(
            "docs/deploy-eks.md: token rotation waits on UpgradeInProgress=False, true before the "
            "upgrade starts; wait until status.activeServiceStatus.rayClusterName changes"
        )
    if "activeServiceStatus.rayClusterName" not in rotation:
        problems.append(
            "docs/deploy-eks.md: token rotation does not wait on "
            "status.activeServiceStatus.rayClusterName before deleting the old Secret"
        )
    _no(problems)


def test_placeholders_are_refused_before_any_kubectl_apply():
    problems = preflight.guide_problems(DOCS, ROOT)
    if not re.search(r"^eks-preflight:", (ROOT / "Makefile").read_text(), flags=re.M):
        problems.append("Makefile: no eks-preflight target")
    _no(problems)


def test_the_preflight_refuses_each_placeholder_in_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        preflight.main([str(CHECKOUT / "kuberay" / "ray-service.models.yaml")])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    for what in ("example AWS account", "placeholder commit", "Redis endpoint", "all-zero digest"):
        assert any(what in line for line in lines), (what, lines)
    assert all(line.startswith("error: ") and "; " in line for line in lines)


def test_the_preflight_passes_manifests_generated_for_a_real_site(tmp_path):
    site = kuberay.load_site(
        CHECKOUT / "kuberay",
        registry="210987654321.dkr.ecr.us-west-2.amazonaws.com/raylife",
        commit="0123456789ab",
        redis_address="rediss://master.raylife-gcs.abc123.usw2.cache.amazonaws.com:6379",
        fluent_bit_digest="sha256:" + "ab" * 32,
    )
    for name, text in kuberay.render(site).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    _no(
        [
            line
            for path in sorted(tmp_path.rglob("*"))
            if path.is_file()
            for line in preflight.problems(path)
        ]
    )


# ---- 4. Redis over TLS -------------------------------------------------------------------------


def test_the_gcs_redis_client_is_given_its_ca_bundle():
    problems = []
    for name, items in OBJECTS.items():
        for obj in items:
            cluster = checks.ray_cluster(obj) or {}
            address = (cluster.get("gcsFaultToleranceOptions") or {}).get("redisAddress", "")
            if not address.startswith("rediss://"):
                continue
            head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in head.get("env", [])}
            if not (env.get("RAY_REDIS_CA_CERT") or env.get("RAY_REDIS_CA_PATH")):
                problems.append(
                    f"kuberay/{name}: Redis over TLS with no RAY_REDIS_CA_CERT on the head: hiredis "
                    "then trusts the TLS library's compiled-in default paths; set the image's bundle"
                )
    if "RAY_REDIS_CA_CERT" not in DOCS:
        problems.append("docs/deploy-eks.md: does not say which CA the GCS's Redis client trusts")
    _no(problems)


# ---- a stuck job costs minutes, not a blanket deadline (the hang issue) --------------------------


def test_each_rayjob_deadline_is_sized_to_its_job_and_outlasts_its_watchdog():
    _no(checks.deadline_problems(OBJECTS))
    jobs = {
        o["metadata"]["name"]: o["spec"]["activeDeadlineSeconds"]
        for items in OBJECTS.values()
        for o in items
        if o.get("kind") == "RayJob"
    }
    # Sized per job: a training run's attempt is well under the sweep's, and none is the old
    # blanket 4 hours that a hang would sit out.
    assert jobs["rayjob-train-iris"] < jobs["rayjob-tune-mnist"] < 4 * 3600, jobs


def test_a_deadline_that_cannot_outlast_its_watchdog_is_refused():
    from raylife.deploy import deadlines

    tight = deadlines.JobBudget(work_s=600, stall_s=60)
    spec = {"entrypoint": "python -m jobs.tune --model mnist", "activeDeadlineSeconds": 1}
    found = deadlines.problems("rayjob-x", spec, {deadlines.ANNOTATION: tight.annotation()})
    assert any("!= its budget" in p for p in found), found
    assert any("its watchdog may wait" in p for p in found), found
    assert deadlines.problems("rayjob-x", {"activeDeadlineSeconds": 14400}, {})[0].startswith(
        "RayJob rayjob-x: activeDeadlineSeconds 14400 is not sized to its job"
    )
