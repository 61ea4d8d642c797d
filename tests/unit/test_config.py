import pytest

from raylife.catalog.lookup import get_spec, model_names
from raylife.config import DataConfig, Hyperparams, TrainConfig, TuneConfig
from raylife.errors import RaylifeError
from raylife.settings import Settings


def test_unknown_model_lists_choices():
    with pytest.raises(
        RaylifeError,
        match=r"unknown model 'irs'; choose one of: ionosphere, iris, boston, mnist, or declare it with `raylife init irs",
    ):
        get_spec("irs")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": -1.0}, "lr must be a positive"),
        ({"lr": float("nan")}, "lr must be a positive"),
        ({"batch_size": 0}, "batch size must be >= 1"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"hidden_sizes": ()}, "hidden sizes"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"optimizer": "rmsprop"}, "optimizer must be adam or sgd"),
    ],
)
def test_hyperparams_are_validated(change, message):
    base = get_spec("iris").defaults
    with pytest.raises(RaylifeError, match=message):
        base.replace(**change)


def test_replace_rejects_unknown_fields_and_coerces_types():
    hp = get_spec("iris").defaults
    with pytest.raises(RaylifeError, match="unknown hyperparameter"):
        hp.replace(learning_rate=0.1)
    changed = hp.replace(hidden_sizes=[32, 16], batch_size=8.0, lr=None)
    assert changed.hidden_sizes == (32, 16) and changed.batch_size == 8 and changed.lr == hp.lr
    assert Hyperparams.from_dict(changed.to_dict()) == changed


def test_run_and_sweep_configs_are_validated():
    hp = get_spec("iris").debug
    with pytest.raises(RaylifeError, match="num workers"):
        TrainConfig(model="iris", hparams=hp, num_workers=0)
    with pytest.raises(RaylifeError, match="fractions"):
        DataConfig(val_fraction=0.5, test_fraction=0.45)
    with pytest.raises(RaylifeError, match="num samples"):
        TuneConfig(num_samples=0)


def test_settings_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYLIFE_HOME", str(tmp_path))
    monkeypatch.setenv("RAYLIFE_STORE", "s3://bucket/models")
    settings = Settings.from_env()
    assert settings.home == tmp_path and settings.store_uri == "s3://bucket/models"
    assert settings.runs_uri == str(tmp_path / "runs")
    assert Settings.from_env(store="/elsewhere").store_uri == "/elsewhere"


@pytest.mark.parametrize("model", sorted(model_names()))
def test_every_spec_has_valid_presets_and_search_space(model):
    spec = get_spec(model)
    assert spec.debug.epochs <= 2
    assert set(spec.search_space) <= set(spec.defaults.to_dict())
    with pytest.raises(RaylifeError, match="unknown preset"):
        spec.preset("huge")
