"""What a real EKS cluster would do with kuberay/ (issue 13): checks a schema cannot make.

One test per class of failure; each fails with one line per problem, naming the fix. They read
the files under $RAYLIFE_CHECK_ROOT (default: this checkout), so they can be pointed at an older
tree (`git archive <rev> kuberay docs Makefile | tar -x -C /tmp/old`) to see what they catch.
The last tests feed the generator bad input: it must refuse with one line and write nothing.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from raylife.deploy import checks, gpu_stack, kuberay, nodes
from raylife.errors import RaylifeError
from raylife_dev import manifest_checks

CHECKOUT = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("RAYLIFE_CHECK_ROOT", CHECKOUT))
OBJECTS = manifest_checks.load(ROOT / "kuberay")
CLUSTER = yaml.safe_load((ROOT / "kuberay" / "eks" / "cluster.yaml").read_text())
GROUPS = nodes.node_groups(CLUSTER)
DOCS = (ROOT / "docs" / "deploy-eks.md").read_text()
TODAY = datetime.date(2026, 12, 1)


def _no(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


# ---- 1. pods fit their nodes; 8. workers fill them -------------------------------------------


def test_every_ray_pod_fits_the_node_group_it_is_sent_to():
    _no(checks.fit_problems(OBJECTS, GROUPS))


def test_worker_pods_fill_their_nodes():
    _no(manifest_checks.packing_problems(OBJECTS, GROUPS))


def test_the_reservation_formula_matches_eks():
    # 8 vCPU: 60 + 10 + 2 * 5 + 4 * 2.5 millicores; 58 pods: 255 + 11 * 58 MiB.
    assert nodes.kube_reserved_cpu_m(8) == 90 and nodes.kube_reserved_cpu_m(4) == 80
    assert nodes.kube_reserved_memory_mib(58) == 893
    g5 = nodes.allocatable("g5.xlarge")
    assert 3500 <= g5.cpu_m < 3700 and g5.memory_mib < 15 * 1024 and g5.gpus == 1


# ---- 2. one GPU stack --------------------------------------------------------------------------


def test_torch_cuda_index_and_driver_agree_everywhere():
    _no(gpu_stack.stack_errors(ROOT))


# ---- 3. keep-alive -------------------------------------------------------------------------------


def test_serve_keep_alive_outlasts_the_alb_idle_timeout():
    _no(checks.keep_alive_problems(OBJECTS))


# ---- 4. everything applied, charts pinned, commands exist, quotas first -----------------------


def test_every_manifest_is_applied_by_a_documented_step_or_make_target():
    _no(manifest_checks.applied_problems(ROOT))


def test_every_helm_chart_is_pinned_to_one_version():
    texts = {
        str(p.relative_to(ROOT)): p.read_text()
        for p in [
            ROOT / "docs" / "deploy-eks.md",
            ROOT / "Makefile",
            *(ROOT / "kuberay").rglob("*"),
        ]
        if p.is_file() and p.suffix in {".md", ".sh", ".yaml", ""}
    }
    _no(checks.chart_problems(texts, {n: c.version for n, c in kuberay.CHARTS.items()}))


def _without_comments(text: str) -> str:
    return "\n".join(line.split(" #", 1)[0] for line in text.splitlines())


def test_every_command_of_the_guide_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    problems = [
        f"docs/deploy-eks.md: `make {t}` is no Makefile target"
        for t in sorted(set(re.findall(r"\bmake ([a-z][\w-]*)", _without_comments(DOCS))) - targets)
    ]
    from raylife import cli

    [verb_action] = cli.build_parser()._subparsers._group_actions  # type: ignore[union-attr]
    verbs = set(verb_action.choices or ())
    problems += [
        f"docs/deploy-eks.md: `raylife {v}` is no raylife verb"
        for v in sorted(set(re.findall(r"^\s*raylife ([a-z-]+)", DOCS, flags=re.M)) - verbs)
    ]
    _no(problems)


def test_the_guide_states_quotas_and_tool_versions_before_the_first_step():
    before = DOCS[: DOCS.index("## 1.")]
    problems = [
        f"docs/deploy-eks.md: {what!r} is not stated before step 1"
        for what in (
            "G and VT instances",
            "Standard (A, C, D, H, I, M, R, T, Z)",
            "eksctl",
            "kubectl",
            "helm",
        )
        if what not in before
    ]
    _no(problems)


# ---- 5. tokens ---------------------------------------------------------------------------------


def test_training_and_serving_have_separate_rotatable_tokens():
    _no(manifest_checks.token_problems(OBJECTS))


# ---- 6. least privilege ------------------------------------------------------------------------


def test_serving_pods_read_and_training_pods_write():
    _no(manifest_checks.iam_problems(OBJECTS, CLUSTER, kuberay.BUCKET))


def test_policy_files_are_the_roles_of_cluster_yaml():
    problems = []
    for role in ("train", "serve"):
        path = ROOT / "kuberay" / "eks" / f"iam-policy.{role}.json"
        [account] = [
            a
            for a in CLUSTER["iam"]["serviceAccounts"]
            if a["metadata"]["name"] in (f"raylife-{role}", "raylife")
        ][:1] or [None]
        if not path.is_file():
            problems.append(
                f"kuberay/eks/{path.name} is missing; copy the raylife-{role} policy of cluster.yaml"
            )
        elif account is None or yaml.safe_load(path.read_text()) != account["attachPolicy"]:
            problems.append(
                f"kuberay/eks/{path.name} differs from the raylife-{role} role of cluster.yaml"
            )
    _no(problems)


# ---- 7. version and cost --------------------------------------------------------------------------


def test_kubernetes_version_is_in_standard_support_and_the_guide_says_so():
    version = str(CLUSTER["metadata"]["version"])
    problems = checks.version_problems(CLUSTER, TODAY)
    stated = set(re.findall(r"Kubernetes (1\.\d+)\)", DOCS)) | set(
        re.findall(r"\(Kubernetes (1\.\d+)", DOCS)
    )
    if stated != {version}:
        problems.append(
            f"docs/deploy-eks.md states Kubernetes {sorted(stated)}; the cluster runs {version}"
        )
    _no(problems)


def test_the_idle_cost_follows_the_instance_table():
    # Every node group at its minimum, each node with its 80 GiB root volume (0.009 USD/h).
    nodes_cost = sum(
        g["minSize"] * (nodes.INSTANCE_TYPES[g["instanceType"]].usd_per_hour + 0.009)
        for g in CLUSTER["managedNodeGroups"]
    )
    # The control plane costs 0.10 USD/h in standard support, 0.60 in extended support.
    standard = not checks.version_problems(CLUSTER, TODAY)
    idle = (0.10 if standard else 0.60) + nodes_cost + 0.045
    assert f"${idle:.2f}/h" in DOCS, f"docs/deploy-eks.md: the idle cost is ${idle:.2f}/h"


# ---- 9. immutable images ---------------------------------------------------------------------------


def test_images_are_tagged_by_commit_and_make_image_builds_those_tags():
    problems = checks.image_problems(OBJECTS)
    commit = "0123456789ab"
    made = subprocess.run(
        ["make", "-n", "image", f"COMMIT={commit}", "REGISTRY=r.example/raylife"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    site = kuberay.load_site(CHECKOUT / "kuberay", registry="r.example/raylife", commit=commit)
    for variant in ("cpu", "gpu"):
        if f"-t {kuberay.image(site, variant)} " not in made:
            problems.append(f"make image does not build {kuberay.image(site, variant)}")
    if "IMMUTABLE" not in DOCS:
        problems.append(
            "docs/deploy-eks.md: create the ECR repository with --image-tag-mutability IMMUTABLE"
        )
    _no(problems)


# ---- production serving ------------------------------------------------------------------------------


def test_the_service_is_highly_available_and_stops_gracefully():
    _no(manifest_checks.serving_problems(OBJECTS))


def test_observability_is_shaped_as_kuberay_ships_it():
    _no(manifest_checks.observability_problems(OBJECTS))


# ---- bad input: refuse with one line, write nothing ---------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "eks").mkdir()
    shutil.copy(CHECKOUT / "kuberay" / "eks" / "cluster.yaml", tmp_path / "eks" / "cluster.yaml")
    return tmp_path


def _refused(folder: Path, site: kuberay.Site, fix: str) -> None:
    with pytest.raises(RaylifeError) as refused:
        kuberay.write(folder, site)
    message = str(refused.value)
    assert "\n" not in message and fix in message, message
    assert sorted(p.name for p in folder.rglob("*")) == ["cluster.yaml", "eks"], "wrote files"


def test_a_pod_that_fits_no_node_is_refused(folder, monkeypatch):
    monkeypatch.setattr(kuberay, "HEAD", nodes.Resources(16000, 65536))
    _refused(folder, kuberay.load_site(folder), "choose a larger instance type")


def test_an_unknown_instance_type_is_refused(folder, capsys):
    path = folder / "eks" / "cluster.yaml"
    path.write_text(
        path.read_text().replace("instanceType: m6i.2xlarge", "instanceType: m9z.4xlarge")
    )
    with pytest.raises(SystemExit) as exited:
        kuberay.main([str(folder)])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "unknown instance type 'm9z.4xlarge'" in line and "INSTANCE_TYPES" in line
    assert sorted(p.name for p in folder.rglob("*")) == ["cluster.yaml", "eks"]


def test_a_keep_alive_below_the_alb_idle_timeout_is_refused(folder):
    site = kuberay.Site(
        cluster_config=kuberay.load_site(folder).cluster_config, alb_idle_timeout_s=120
    )
    _refused(folder, site, "keep_alive_timeout_s")


def test_a_mutable_tag_is_refused(folder):
    _refused(folder, kuberay.load_site(folder, commit="latest"), "mutable image")


def test_a_missing_chart_version_is_refused(folder, monkeypatch):
    chart = kuberay.CHARTS["kube-prometheus-stack"]
    monkeypatch.setitem(
        kuberay.CHARTS,
        "kube-prometheus-stack",
        kuberay.Chart(chart.repo, chart.url, "", chart.namespace),
    )
    _refused(folder, kuberay.load_site(folder), "pin")
