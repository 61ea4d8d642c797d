"""A team's own model on EKS: `raylife kuberay-manifests` run beside its models folder writes its
RayJobs and RayService app, a models image layer, and refuses data a pod cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raylife.catalog import lookup
from raylife.deploy import kuberay, models_layer
from raylife.errors import RaylifeError
from raylife.serve import config as serve_config
from tests.manifests.test_manifests import crd_errors

DECLARATION = """\
name = "churn"
description = "a team's model"
task = "binary"

[data]
uri = "s3://team-bucket/churn/"
target = "churned"

[architecture]
kind = "churn_net:build"

[hyperparameters]
lr = 0.003
batch_size = 64
epochs = 20
hidden_sizes = [32]

[serve]
mode = "dedicated"
min_replicas = 1
max_replicas = 3
batching = true
"""


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "churn.toml").write_text(DECLARATION)
    (models / "churn_net.py").write_text("def build(h, s, n):\n    raise NotImplementedError\n")
    monkeypatch.setenv(lookup.MODELS_ENV, str(models))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kuberay").symlink_to(Path(kuberay.__file__).parents[3] / "kuberay")
    return models


def test_a_team_model_gets_its_rayjobs_service_app_and_image_layer(team: Path):
    site = kuberay.load_site()
    texts = kuberay.render(site)
    suffix = f"-m{models_layer.digest(team)}"
    assert site.models_suffix == suffix
    for name in ("ray-job.train-churn.yaml", "ray-job.batch-predict-churn.yaml"):
        job = yaml.safe_load(texts[name].split("---\n")[-1])
        assert crd_errors(job) == [], name
        assert "--model churn" in job["spec"]["entrypoint"]
        head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert head["containers"][0]["image"].endswith(f"-cpu{suffix}")
    service = yaml.safe_load(texts["ray-service.models.yaml"].split("---\n")[-1])
    assert crd_errors(service) == []
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    serve_config.validate(config)
    [app] = [a for a in config["applications"] if a["name"] == "churn"]
    deployment = app["deployments"][0]
    # The declaration's [serve] settings over the eks overlay's defaults (min 2, max 8).
    assert deployment["autoscaling_config"]["max_replicas"] == 3
    assert deployment["user_config"]["batching"]["enabled"] is True
    assert (
        "churn"
        in next(a for a in config["applications"] if a["name"] == "pool")["args"]["dedicated"]
    )
    layer = texts[models_layer.DOCKERFILE]
    assert (
        "ARG BASE\nFROM ${BASE}" in layer
        and "COPY --chown=1000:100 models/ /opt/raylife/models/" in layer
    )
    assert f"ENV RAYLIFE_MODELS={models_layer.IMAGE_FOLDER}" in layer


def test_the_layer_tag_follows_the_models_code(team: Path):
    before = models_layer.digest(team)
    (team / "churn_net.py").write_text("def build(h, s, n):\n    return None  # changed\n")
    assert models_layer.digest(team) != before


def test_a_local_data_path_is_refused_before_anything_is_written(team: Path):
    (team / "churn.toml").write_text(DECLARATION.replace("s3://team-bucket/churn/", "churn.csv"))
    with pytest.raises(
        RaylifeError, match=r"churn.toml: data.uri .*churn.csv is a path on this machine"
    ):
        kuberay.render(kuberay.load_site())


def test_without_team_models_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(lookup.MODELS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert models_layer.tag_suffix() == "" and models_layer.dockerfile() is None
