"""The open catalogue: declarations, `raylife init`, user factories, and every bad input named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from raylife.catalog import carry, lookup, scaffold, user_code
from raylife.catalog.architectures import build_model
from raylife.config import DataConfig, TrainConfig
from raylife.data.prepare import prepare
from raylife.errors import ArtifactError, RaylifeError
from raylife.lifecycle.artifact import Artifact
from raylife.training.train import check_model_fits, make_artifact, model_args_for

ROOT = Path(__file__).parents[2]

TABLE_MODEL = """\
name = "churn"
description = "a user table"
task = "binary"

[data]
uri = "churn.csv"
target = "churned"
id_column = "id"

[architecture]
kind = "mlp"

[hyperparameters]
lr = 0.003
batch_size = 16
epochs = 3
hidden_sizes = [16]

[search]
lr = { loguniform = [0.001, 0.01] }
hidden_sizes = { choice = [[8], [16, 8]] }
"""

FACTORY = """\
import torch
from torch import nn


class Gated(nn.Module):  # not an MLP of the built-in kind: a gated residual block
    def __init__(self, n_in, width, n_out):
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.gate = nn.Linear(width, width)
        self.out = nn.Linear(width, n_out)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(h + h * torch.sigmoid(self.gate(h)))


def build(hyperparameters, input_shape, n_outputs):
    return Gated(input_shape[0], hyperparameters.hidden_sizes[0], n_outputs)
"""


def churn_table(folder: Path, rows: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 5))
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    frame.insert(0, "id", np.arange(rows))
    frame["churned"] = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    path = folder / "churn.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty models folder outside the package, as $RAYLIFE_MODELS."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv(lookup.MODELS_ENV, str(folder))
    monkeypatch.syspath_prepend(str(folder))  # undone after the test, as the lookup's insert is not
    return folder


def declare(folder: Path, text: str, name: str = "churn") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------
# The packaged declarations are the tutorial models


def test_the_four_tutorial_models_are_four_packaged_declarations():
    specs = lookup.catalogue()
    assert list(specs) == ["ionosphere", "iris", "boston", "mnist"]
    assert all(lookup.is_packaged(spec) for spec in specs.values())
    iris = specs["iris"]
    assert (iris.task, iris.architecture, iris.input_kind) == ("multiclass", "mlp", "tabular")
    assert iris.defaults.hidden_sizes == (16, 8) and iris.gate.absolute == 0.045
    assert specs["mnist"].input_kind == "image" and specs["mnist"].serve.batching is True
    assert iris.tutorial is not None and iris.tutorial.same_data == 0.924


def test_no_module_outside_the_catalogue_names_a_tutorial_model_as_a_choice():
    """The model set is open: nothing lists the four as the only choices."""
    offenders = []
    for path in (ROOT / "lib/raylife").rglob("*.py"):
        if "catalog" in path.parts:
            continue
        text = path.read_text()
        if "boston | ionosphere | iris | mnist" in text or '"mlp", "cnn"]' in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


# ------------------------------------------------------------------------------------------------
# A user table model


def test_a_declared_table_is_found_and_its_relative_uri_resolved(models: Path, tmp_path: Path):
    churn_table(tmp_path)
    declare(models, TABLE_MODEL.replace('uri = "churn.csv"', 'uri = "../churn.csv"'))
    spec = lookup.get_spec("churn")
    assert spec.data.uri == str(tmp_path / "churn.csv") and not lookup.is_packaged(spec)
    data = prepare(spec, DataConfig())
    assert data.schema.feature_names == [f"f{i}" for i in range(5)]  # id kept out
    assert sum(data.provenance["rows"].values()) == 300


def test_init_infers_the_task_writes_a_loadable_declaration_and_says_how(
    models: Path, tmp_path: Path
):
    table = churn_table(tmp_path)
    written, notes = scaffold.write("churn", str(table), "churned", models)
    assert written == [models / "churn.toml"]
    assert "task: binary (inferred: target 'churned' is 2 distinct values" in notes[0]
    assert "change `task` in the file" in notes[0] and "id column 'id'" in notes[1]
    spec = lookup.get_spec("churn")
    assert spec.task == "binary" and spec.data.id_column == "id"
    assert spec.defaults.epoch_selection == "best" and set(spec.search_space) == {
        "lr",
        "hidden_sizes",
        "dropout",
    }
    with pytest.raises(RaylifeError, match="already declared by .*churn.toml"):
        scaffold.write("churn", str(table), "churned", models)


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (np.arange(200) % 2, "binary"),
        (np.arange(200) % 3, "multiclass"),
        (np.linspace(0, 1, 200), "regression"),
        (np.arange(200), "regression"),  # 200 distinct integers: a count, not classes
    ],
)
def test_init_task_inference(values: np.ndarray, task: str):
    frame = pd.DataFrame({"x": np.arange(200.0), "y": values})
    assert scaffold.infer(frame, "y", "t.csv").task == task


def test_init_refuses_a_missing_target_and_text_features_writing_nothing(
    models: Path, tmp_path: Path
):
    table = churn_table(tmp_path)
    with pytest.raises(RaylifeError, match="target column 'nope' not in .*columns are: id, f0"):
        scaffold.write("churn", str(table), "nope", models)
    frame = pd.read_csv(table).assign(city="x")
    frame.to_csv(table, index=False)
    with pytest.raises(RaylifeError, match=r"non-numeric feature column\(s\) \['city'\]"):
        scaffold.write("churn", str(table), "churned", models)
    with pytest.raises(RaylifeError, match="model name 'Bad Name'"):
        scaffold.write("Bad Name", str(table), "churned", models)
    assert list(models.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# Bad declarations: one line naming the file, the field and the fix


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('task = "binary"', 'task = "binary"\ntsak = 1', "tsak: unknown field"),
        ('task = "binary"', 'task = "ranking"', "task: Input should be"),
        ("epochs = 3", 'epochs = "three"', r"\[hyperparameters\]"),
        ("epochs = 3", "epochs = 3\nlearning_rate = 1", r"unknown field\(s\) \['learning_rate'\]"),
        (
            "lr = { loguniform = [0.001, 0.01] }",
            "lr = { loguniform = [0.01, 0.001] }",
            r"search.lr.*low <= high",
        ),
        ("[[8], [16, 8]]", "[[8], [0]]", r"search.hidden_sizes: option \(0,\)"),
        ('kind = "mlp"', 'kind = "transformer"', "architecture.kind: .*package.module:function"),
        ('target = "churned"\n', "", "a table needs its target column: add target = COLUMN"),
        ("lr = 0.003\n", "", "missing lr"),
        ('name = "churn"', 'name = "other"', "rename the file to other.toml"),
        ('description = "a user table"', "description = ", "not valid TOML"),
    ],
)
def test_a_bad_declaration_is_one_line_naming_file_field_and_fix(
    models: Path, old: str, new: str, expected: str
):
    assert old in TABLE_MODEL
    path = declare(models, TABLE_MODEL.replace(old, new, 1))
    with pytest.raises(RaylifeError, match=expected) as caught:
        lookup.catalogue()
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message, message


def test_a_name_taken_by_the_package_is_refused(models: Path):
    text = TABLE_MODEL.replace('name = "churn"', 'name = "iris"')
    declare(models, text, name="iris")
    with pytest.raises(
        RaylifeError, match="'iris' is already declared by .*catalog/models/iris.toml"
    ):
        lookup.catalogue()


def test_a_missing_models_folder_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(lookup.MODELS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(RaylifeError, match="RAYLIFE_MODELS=.*nowhere is not a folder"):
        lookup.catalogue()


def test_a_missing_table_fails_before_anything_runs(models: Path):
    declare(models, TABLE_MODEL)
    with pytest.raises(RaylifeError, match="churn.csv"):
        prepare(lookup.get_spec("churn"), DataConfig())


# ------------------------------------------------------------------------------------------------
# A user factory


def factory_model(models: Path, tmp_path: Path, factory: str = FACTORY) -> TrainConfig:
    churn_table(tmp_path)
    (models / "churn_net.py").write_text(factory)
    text = TABLE_MODEL.replace('kind = "mlp"', 'kind = "churn_net:build"').replace(
        'uri = "churn.csv"', 'uri = "../churn.csv"'
    )
    declare(models, text)
    sys.modules.pop("churn_net", None)
    spec = lookup.get_spec("churn")
    return TrainConfig(model="churn", hparams=spec.defaults)


def test_a_factory_model_trains_is_recorded_and_rebuilt(models: Path, tmp_path: Path):
    cfg = carry.pack(factory_model(models, tmp_path))
    data = prepare(lookup.get_spec("churn"), cfg.data)
    check_model_fits(cfg, data)
    module = build_model("churn_net:build", model_args_for(cfg, data))
    assert type(module).__name__ == "Gated"
    artifact = make_artifact(cfg, data, module, [], {"val_accuracy": 0.5}, "unit")
    assert artifact.code is not None and artifact.code["module"] == "churn_net"
    assert artifact.declaration["sha256"] and "churn_net:build" in artifact.declaration["text"]
    files = artifact.to_files()
    again = Artifact.from_files(files["artifact.json"], files["weights.pt"], "churn/v1")
    rebuilt = again.build_module()
    x = torch.as_tensor(data.test.X[:4])
    assert torch.equal(rebuilt(x), module.eval()(x))


def test_a_changed_factory_module_is_refused_unless_allowed(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cfg = carry.pack(factory_model(models, tmp_path))
    data = prepare(lookup.get_spec("churn"), cfg.data)
    module = build_model("churn_net:build", model_args_for(cfg, data))
    files = make_artifact(cfg, data, module, [], {}, "unit").to_files()
    (models / "churn_net.py").write_text(FACTORY + "\n# edited\n")
    again = Artifact.from_files(files["artifact.json"], files["weights.pt"], "churn/v1")
    with pytest.raises(ArtifactError, match="churn_net.py changed since this version was trained"):
        again.build_module()
    monkeypatch.setenv(user_code.ALLOW_CHANGED_CODE_ENV, "1")
    again.build_module()


def test_a_worker_without_the_folder_gets_the_model_from_the_config(models: Path, tmp_path: Path):
    """A fresh process that cannot see the models folder unpacks the carried declaration and
    code, then builds the model (what a Ray worker on another node does)."""
    cfg = carry.pack(factory_model(models, tmp_path))
    payload = tmp_path / "cfg.json"
    payload.write_text(json.dumps(cfg.carried))
    script = f"""
import json, os
os.environ.pop("RAYLIFE_MODELS", None)
os.environ["RAYLIFE_CODE_CACHE"] = {str(tmp_path / "cache")!r}
from raylife.catalog import carry, lookup
from raylife.catalog.architectures import build_model
from types import SimpleNamespace
carry.unpack(SimpleNamespace(carried=json.load(open({str(payload)!r}))))
spec = lookup.get_spec("churn")
hp = spec.defaults
model = build_model(spec.architecture, spec.model_args(hp, [5], 1))
print(type(model).__name__, spec.data.uri)
"""
    (tmp_path / "cache").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path / "cache"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Gated", str(tmp_path / "churn.csv")]


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("raise ImportError('no such thing')\n", r"cannot import churn_net \(ImportError"),
        (
            "def build(h, s, n):\n    raise ValueError('bad width')\n",
            "raised ValueError: bad width",
        ),
        ("def build(h, s, n):\n    return 3\n", "returned int, not a torch.nn.Module"),
        (
            "from torch import nn\ndef build(h, s, n):\n    return nn.Linear(s[0], 3)\n",
            r"needs outputs of shape \[batch, 1\].*got \[1, 3\]",
        ),
        (
            "from torch import nn\ndef build(h, s, n):\n    return nn.Linear(7, n)\n",
            "forward pass on one example of shape \\[1, 5\\] raised RuntimeError",
        ),
        ("def other(h, s, n):\n    pass\n", "churn_net has no function build"),
    ],
)
def test_a_bad_factory_is_named_before_any_worker_starts(
    models: Path, tmp_path: Path, factory: str, expected: str
):
    cfg = factory_model(models, tmp_path, factory)
    data = prepare(lookup.get_spec("churn"), cfg.data)
    with pytest.raises(RaylifeError, match=expected) as caught:
        check_model_fits(cfg, data)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------------
# The exported program: serving without the user's code


def registered_factory_version(models: Path, tmp_path: Path, factory: str = FACTORY) -> Any:
    from raylife.lifecycle.store import ModelStore

    cfg = carry.pack(factory_model(models, tmp_path, factory))
    data = prepare(lookup.get_spec("churn"), cfg.data)
    torch.manual_seed(0)
    module = build_model("churn_net:build", model_args_for(cfg, data))
    store = ModelStore(str(tmp_path / "store"))
    version = store.register(make_artifact(cfg, data, module, [], {}, "unit"))
    return store, version, module.eval(), data


def test_a_factory_version_serves_its_exported_program_without_the_users_code(
    models: Path, tmp_path: Path
):
    from raylife.inference.predict import Predictor

    store, version, eager, data = registered_factory_version(models, tmp_path)
    meta = store.metadata("churn", version)
    assert set(meta["exported"]["files"]) == {
        "program.json",
        "program_state.pt",
        "program_constants.pt",
        "program_inputs.pt",
    }
    # The user's code is gone from disk and from this process: the program still answers.
    (models / "churn_net.py").unlink()
    sys.modules.pop("churn_net", None)
    predictor = Predictor.from_store(store, "churn", version)
    assert predictor.artifact.program is not None
    X = torch.as_tensor(data.test.X)
    with torch.no_grad():
        gap = (predictor.module(X) - eager(X)).abs().max().item()
    assert gap <= 1e-5  # the stated tolerance (raylife.lifecycle.exported.TOLERANCE)
    answers = predictor.predict_array(data.test_raw.X[:3])
    assert len(answers) == 3


def test_a_model_export_refuses_says_why_and_is_served_eagerly(models: Path, tmp_path: Path):
    from raylife.inference.predict import Predictor

    branching = FACTORY.replace(
        "        return self.out(h + h * torch.sigmoid(self.gate(h)))",
        "        if h.sum() > 0:  # data-dependent control flow: torch.export cannot trace it\n"
        "            return self.out(h)\n"
        "        return self.out(h + h * torch.sigmoid(self.gate(h)))",
    )
    store, version, _, _ = registered_factory_version(models, tmp_path, branching)
    reason = store.metadata("churn", version)["exported"]["error"]
    assert reason and "files" not in store.metadata("churn", version)["exported"]
    predictor = Predictor.from_store(store, "churn", version)
    assert predictor.artifact.program is None and type(predictor.module).__name__ == "Gated"


def test_a_tampered_program_file_is_refused(models: Path, tmp_path: Path):
    store, version, _, _ = registered_factory_version(models, tmp_path)
    path = tmp_path / "store" / "churn" / version / "program.json"
    path.write_bytes(path.read_bytes().replace(b"{", b"{ ", 1))
    with pytest.raises(ArtifactError, match="program.json checksum mismatch"):
        store.load("churn", version)


# ------------------------------------------------------------------------------------------------
# A declaration with no hyperparameters: the recipe for its table


def test_a_declaration_without_hyperparameters_gets_the_recipe_for_its_table(
    models: Path, tmp_path: Path
):
    from raylife.catalog import recipe

    churn_table(tmp_path, rows=1000)
    text = TABLE_MODEL.replace('uri = "churn.csv"', 'uri = "../churn.csv"')
    text = text[: text.index("[hyperparameters]")]  # no hyperparameters, search or gate
    declare(models, text)
    spec = lookup.get_spec("churn")
    assert spec.declared_defaults is None
    planned = recipe.for_table(1000, 5, "binary")  # 5 features: the id column is kept out
    made = spec.defaults.to_dict()
    assert {k: made[k] for k in planned.hyperparameters} == planned.hyperparameters
    assert set(spec.search_space) == set(planned.search)
    assert spec.gate.absolute == planned.gate["absolute"] and spec.debug.epochs == 2


def test_search_without_hyperparameters_is_refused(models: Path):
    text = TABLE_MODEL.replace(
        TABLE_MODEL[TABLE_MODEL.index("[hyperparameters]") : TABLE_MODEL.index("[search]")], ""
    )
    declare(models, text)
    with pytest.raises(RaylifeError, match=r"\[search\] without \[hyperparameters\]"):
        lookup.catalogue()


def test_an_image_model_without_hyperparameters_is_told_to_declare_them(models: Path):
    declare(
        models,
        'name = "digits"\ndescription = "d"\ntask = "multiclass"\n'
        '[data]\nembedded = "mnist"\n[architecture]\nkind = "cnn"\n',
        name="digits",
    )
    with pytest.raises(RaylifeError, match="the recipe is for tables"):
        _ = lookup.get_spec("digits").defaults
