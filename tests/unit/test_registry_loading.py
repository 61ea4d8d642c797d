"""Loading a model from an MLflow registry (issue 15, item 2): `raylife predict --model-uri` and
the Serve model service's `model_uri`, against a real local MLflow store (a copy of a migrated
SQLite file), without Ray: the service is built directly, not deployed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from raylife.cli import main
from raylife.errors import ArtifactError, RaylifeError
from raylife.inference.predict import Predictor
from raylife.lifecycle.promotion import promote
from raylife.lifecycle.store import ModelStore
from raylife.serve.model_service import ModelService
from raylife.settings import Settings
from raylife.tracking import runs as tracking
from raylife.tracking.registry_mirror import Mirror, RegistryModel

from ..conftest import quick_artifact

ROW = [5.1, 3.5, 1.4, 0.2]


def _store_and_mirror() -> tuple[ModelStore, Mirror, str]:
    settings = Settings.from_env()
    config = tracking.config_for(settings)
    assert config is not None
    return ModelStore(settings.store_uri), Mirror(config), config.uri


def _promoted(store: ModelStore, mirror: Mirror, epochs: int, force: bool = False) -> str:
    version = store.register(quick_artifact("iris", epochs=epochs))
    assert promote(store, "iris", version, force=force, mirror=mirror).mirror_problem == ""
    return version


def _predict(capsys: Any, *argv: str) -> dict[str, Any]:
    assert main(["predict", *argv, "--input", json.dumps([ROW])]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow  # ~5 s: trains and mirrors versions into MLflow, in make test only
def test_predict_loads_the_champion_or_a_numbered_version_from_the_registry(tracked_home, capsys):
    store, mirror, uri = _store_and_mirror()
    first = _promoted(store, mirror, epochs=1)
    second = _promoted(store, mirror, epochs=0, force=True)  # the champion now

    answer = _predict(capsys, "--model-uri", "models:/iris@champion")  # the local store: default
    assert answer["model"] == "iris" and answer["model_uri"] == "models:/iris@champion"
    assert answer["version"] == second
    expected = Predictor.from_store(store, "iris", second).predict_rows([ROW])
    assert answer["predictions"] == expected

    by_number = _predict(capsys, "--model-uri", "models:/iris/1", "--tracking-uri", uri)
    assert by_number["version"] == first
    assert by_number["predictions"] == Predictor.from_store(store, "iris", first).predict_rows(
        [ROW]
    )


def _refused(capsys: Any, argv: list[str], *needles: str) -> None:
    assert main(["predict", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert all(n in err for n in needles), err


def test_predict_from_a_registry_refuses_bad_input_in_one_line_with_the_fix(tracked_home, capsys):
    store, mirror, _ = _store_and_mirror()
    _promoted(store, mirror, epochs=0)
    capsys.readouterr()  # MLflow's warnings while mirroring
    row = ["--input", json.dumps([ROW])]
    _refused(capsys, ["--model-uri", "iris@champion", *row], "models:/<name>@<alias>")
    _refused(
        capsys, ["--model-uri", "models:/iris@best", *row], "alias best", "raylife models sync iris"
    )
    _refused(
        capsys, ["--model-uri", "models:/iris/9", *row], "version=9", "raylife models sync iris"
    )
    _refused(capsys, ["--model-uri", "models:/boston@champion", *row], "boston", "models sync")
    _refused(
        capsys,
        ["--model", "boston", "--model-uri", "models:/iris@champion", *row],
        "make them agree",
    )
    _refused(
        capsys,
        ["--model-uri", "models:/iris@champion", "--version", "latest", *row],
        "models:/iris/3",
    )
    _refused(
        capsys, ["--model-uri", "models:/iris@champion", "--no-tracking", *row], "--tracking-uri"
    )
    _refused(capsys, [*row], "--model MODEL", "--model-uri")
    _refused(
        capsys,
        [
            "--model-uri",
            "models:/iris@champion",
            "--tracking-uri",
            f"sqlite:///{tracked_home}/none.db",
            *row,
        ],
        "no MLflow store at",
        "raylife models sync iris",
    )


def test_an_unreachable_registry_is_named_with_the_fix(tracked_home):
    from raylife.cluster import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RaylifeError, match="start it, or pass --tracking-uri") as refused:
        RegistryModel("models:/iris@champion", url).resolve()
    assert url in str(refused.value)


def test_the_model_service_serves_the_registry_champion_and_follows_the_alias(tracked_home):
    store, mirror, uri = _store_and_mirror()
    first = _promoted(store, mirror, epochs=1)
    service = ModelService("iris", store.uri, model_uri="models:/iris@champion", tracking_uri=uri)
    assert service.current.version == first and service.source == "models:/iris@champion"
    assert service.info()["source"] == "models:/iris@champion"
    import numpy as np

    loaded, answers = service.predict(np.asarray([ROW], dtype=np.float32))
    assert loaded.version == first
    assert answers == Predictor.from_store(store, "iris", first).predict_rows([ROW])
    assert service.reload() is False  # the alias still names the served version

    second = _promoted(store, mirror, epochs=0, force=True)  # the mirror moves `champion`
    assert service.reload() is True and service.current.version == second
    assert service.reload() is False

    pinned = ModelService("iris", store.uri, model_uri="models:/iris/1", tracking_uri=uri)
    assert pinned.current.version == first and pinned.reload() is False


def test_the_model_service_refuses_another_models_uri(tracked_home):
    store, mirror, uri = _store_and_mirror()
    _promoted(store, mirror, epochs=0)
    with pytest.raises(ArtifactError, match="is a iris model, not boston; point model_uri"):
        ModelService("boston", store.uri, model_uri="models:/iris@champion", tracking_uri=uri)


def test_the_model_app_args_take_a_model_uri_of_their_own_model():
    from pydantic import ValidationError
    from serve_apps.models import ModelAppArgs

    args = ModelAppArgs(model="iris", store="/s", model_uri="models:/iris@champion")
    assert args.model_uri == "models:/iris@champion" and args.tracking_uri is None
    assert ModelAppArgs(model="iris", store="/s").model_uri is None  # the store: as before
    with pytest.raises(ValidationError, match="point it at this app's model"):
        ModelAppArgs(model="iris", store="/s", model_uri="models:/mnist@champion")
