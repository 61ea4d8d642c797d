"""The Serve config: base + overlays render to complete configs that Ray Serve's schema accepts."""

from __future__ import annotations

import pytest
import yaml

from raylife.errors import RaylifeError
from raylife.serve import config as serve_config


@pytest.mark.parametrize("env", serve_config.ENVIRONMENTS)
def test_rendered_files_are_fresh(env):
    """serve_apps/rendered/ is what deploys; it must equal base + overlay rendered now."""
    path = serve_config.rendered_path(env)
    assert path.read_text() == serve_config.rendered_text(env), (
        f"{path} is stale: run `make serve-configs`"
    )


def _model_deployment(config: dict, app: str) -> dict:
    [found] = [a for a in config["applications"] if a["name"] == app]
    return found["deployments"][0]


def test_environments_differ_only_where_the_overlays_say():
    local, eks = serve_config.render("local"), serve_config.render("eks")
    assert [a["name"] for a in local["applications"]] == [a["name"] for a in eks["applications"]]
    for app_l, app_e in zip(local["applications"], eks["applications"], strict=True):
        assert app_l["import_path"] == app_e["import_path"]
        assert app_l["route_prefix"] == app_e["route_prefix"]
    assert local["http_options"]["host"] == "127.0.0.1"
    assert _model_deployment(eks, "mnist")["ray_actor_options"].get("num_gpus", 0) > 0
    assert _model_deployment(local, "mnist")["ray_actor_options"].get("num_gpus", 0) == 0
    assert all(
        a["args"]["store"].startswith("s3://")
        for a in eks["applications"]
        if a["import_path"] == serve_config.MODEL_IMPORT_PATH
    )
    # Structure that must not drift between environments: limits and batching.
    for key in ("max_ongoing_requests", "max_queued_requests", "user_config"):
        assert _model_deployment(local, "iris")[key] == _model_deployment(eks, "iris")[key]


def test_batching_is_on_only_for_the_cnn():
    config = serve_config.render("local")
    enabled = {
        a["name"]: _model_deployment(config, a["name"])["user_config"]["batching"]["enabled"]
        for a in config["applications"]
        if a["import_path"] == serve_config.MODEL_IMPORT_PATH
    }
    assert enabled == {"boston": False, "ionosphere": False, "iris": False, "mnist": True}


def test_for_models_keeps_the_pool_app_in_step():
    config = serve_config.for_models(serve_config.render("local"), ["iris"])
    assert [a["name"] for a in config["applications"]] == ["pool", "iris"]
    assert config["applications"][0]["args"]["dedicated"] == ["iris"]


def test_invalid_configs_are_refused():
    config = serve_config.render("local")
    _model_deployment(config, "iris")["max_ongoing_requests"] = "many"
    with pytest.raises(RaylifeError, match="invalid Serve config"):
        serve_config.validate(config)
    config = serve_config.render("local")
    config["applications"][1]["args"]["model"] = "irs"
    with pytest.raises(RaylifeError, match="unknown model 'irs'"):
        serve_config.validate(config)


def test_unknown_overlay_keys_are_refused(tmp_path, monkeypatch):
    (tmp_path / "base.yaml").write_text((serve_config.CONFIG_DIR / "base.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"stor": "x"}))
    monkeypatch.setattr(serve_config, "CONFIG_DIR", tmp_path)
    with pytest.raises(RaylifeError, match="unknown keys \\['stor'\\]"):
        serve_config.render("bad")


@pytest.mark.slow  # ~3-6 s each: a fresh interpreter imports Serve, in make test only
@pytest.mark.parametrize("module", ["serve_apps.models", "serve_apps.pool"])
def test_building_an_application_does_not_import_torch(module):
    """The controller imports every app's module in a build task of its own (one process each):
    with torch imported there, a 2-core machine spent ~20 s more CPU starting `raylife serve`."""
    import subprocess
    import sys

    code = (
        f"import sys, {module} as app\n"
        "assert hasattr(app, 'build_app')\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'pyarrow.parquet') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "[]", f"importing {module} pulled in {found}; import them in the replica"


def test_a_refused_deployment_quotes_whole_words():
    from raylife.serve.local import _tail

    message = (
        "Traceback (most recent call last):\n" + "x" * 50 + "\n[ALERT] cannot bind socket 9101"
    )
    assert _tail(message, 40) == "... [ALERT] cannot bind socket 9101"
    assert _tail("short", 40) == "short"
    assert _tail("a" * 60, 40) == "... " + "a" * 40
