"""Bad CLI input, every option that takes a typed value or a file: exit code 2, exactly one stderr
line that names the problem and the fix, no traceback, and never a Ray cluster (the checks come
first). test_cli.py has the cases it already covered (unknown models, --lr/--num-workers values,
missing data files and columns, --resume, inline --input errors, corrupt artifacts)."""

import os
import shutil
from dataclasses import replace

import pytest

from raylife.cli import EXIT_USER_ERROR, main
from raylife.cluster import free_port
from raylife.lifecycle import history
from raylife.lifecycle.store import ModelStore
from raylife.serve import config as serve_config

from ..conftest import quick_artifact


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """A case that got past validation would start a cluster: fail it instead."""
    import ray

    import raylife.cluster

    def refuse(*args, **kwargs):
        raise AssertionError("this input reached Ray; it should have been refused first")

    monkeypatch.setattr(raylife.cluster, "ensure_ray", refuse)
    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(scope="module")
def iris_artifact():
    return quick_artifact("iris", epochs=0)


@pytest.fixture
def files(home, tmp_path, iris_artifact):
    """A store with iris promoted, and the broken files the cases pass."""
    store = ModelStore(str(home / "store"))
    store.promote("iris", store.register(iris_artifact))
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "garbage.csv").write_bytes(bytes(range(256)) * 2)
    (tmp_path / "words.csv").write_text(
        "sepal_length_cm,sepal_width_cm,petal_length_cm,petal_width_cm\nabc,1,2,3\n"
    )
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "table.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    (tmp_path / "a-file").write_text("not a store")
    return tmp_path


def one_line_error(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit from parse_args
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_USER_ERROR, (argv, code, err)
    assert len(lines) == 1, (argv, lines)
    assert "Traceback" not in err and lines[0].startswith("raylife")
    return lines[0]


def _id(argv):
    return " ".join(argv).replace("{tmp}/", "")[:60]


DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens there

WRONG_TYPES = [  # argparse: the flag, the bad value, what it takes, and where the help is
    (["train", "--model", "iris", "--epochs", "abc"], "invalid int value: 'abc'"),
    (["train", "--model", "iris", "--lr", "fast"], "invalid float value: 'fast'"),
    (["train", "--model", "iris", "--optimizer", "adamw"], "choose from 'adam', 'sgd'"),
    (["train", "--model", "iris", "--epoch-selection", "first"], "choose from 'best', 'last'"),
    (["tune", "--model", "iris", "--lr-schedule", "step"], "choose from 'constant', 'cosine'"),
    (["selection-study", "--folds", "x"], "--folds: invalid int value: 'x'"),
    (["train", "--model", "iris", "--conv-channels", ","], "at least one size, like 64,32"),
    (["train"], "the following arguments are required: --model"),
    (
        ["trian", "--model", "iris"],
        "invalid choice: 'trian' (choose from 'init', 'catalog', 'train'",
    ),
    (["tune", "--model", "iris", "--samples", "2.5"], "--samples: invalid int value: '2.5'"),
    (["tune", "--model", "iris", "--scheduler", "pbt"], "choose from 'asha', 'fifo'"),
    (["predict", "--model", "iris"], "one of the arguments --input --image is required"),
    (["predict", "--model", "iris", "--input", "[[1]]", "--image", "x.png"], "not allowed with"),
    (["loadtest", "--concurrency", "x"], "--concurrency: invalid int value: 'x'"),
    (["loadtest", "--batching", "maybe"], "choose from 'on', 'off'"),
    (["serve", "--port", "http"], "--port: invalid int value: 'http'"),
    (["serve", "--num-gpus", "lots"], "--num-gpus: invalid float value: 'lots'"),
    (["run", "--samples", "x"], "--samples: invalid int value: 'x'"),
]


@pytest.mark.parametrize(("argv", "expected"), WRONG_TYPES, ids=[_id(a) for a, _ in WRONG_TYPES])
def test_wrong_types_name_the_flag_and_the_help(capsys, home, argv, expected):
    line = one_line_error(capsys, argv)
    assert expected in line
    verb = argv[0] if argv[0] != "trian" else ""
    assert f"see `raylife {verb}".rstrip() in line and "--help`" in line


WRONG_VALUES = [  # well typed, out of range: refused before any cluster starts
    (["train", "--model", "iris", "--epochs", "0"], "epochs must be >= 1, got 0"),
    (["train", "--model", "iris", "--preset", "huge"], "unknown preset 'huge'; choose one of"),
    (["train", "--model", "iris", "--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
    (["train", "--model", "iris", "--batch-size", "-5"], "batch size must be >= 1, got -5"),
    (["train", "--model", "iris", "--cpus-per-worker", "0"], "cpus per worker must be > 0"),
    (["train", "--model", "iris", "--max-failures", "-1"], "max failures must be >= 0"),
    (["train", "--model", "iris", "--report-interval-s", "-1"], "report interval must be >= 0"),
    (["train", "--model", "iris", "--data", "torchvision"], "is for image models; iris takes"),
    (["tune", "--model", "iris", "--samples", "0"], "num samples must be >= 1"),
    (["tune", "--model", "iris", "--max-concurrent", "0"], "max concurrent trials must be >= 1"),
    (["quality", "--seeds", "a,b"], "--seeds takes comma-separated integers like 0,1,2"),
    (["quality", "--seeds", ","], "--seeds takes comma-separated integers like 0,1,2"),
    (["selection-study", "--seeds", "1.5"], "--seeds takes comma-separated integers like 0,1,2"),
    (["selection-study", "--folds", "1"], "--folds must be >= 2"),
    (["selection-study", "--repeats", "0"], "--repeats must be >= 1"),
    (["selection-study", "--first-repeat", "-1"], "--first-repeat must be >= 0"),
    (["selection-study", "--set", "lr"], "--set takes NAME=VALUE like lr=0.001, got 'lr'"),
    (["selection-study", "--set", "lr=abc"], "lr must be a number, got 'abc'"),
    (["selection-study", "--set", "epochs=1.5"], "epochs must be a whole number, got 1.5"),
    (
        ["selection-study", "--set", "hidden_sizes=5"],
        "must be a list of whole numbers like [64, 32]",
    ),
    (["selection-study", "--set", "depth=3"], "unknown hyperparameter(s) ['depth']"),
    (["selection-study", "--models", "iris", "--folds", "99"], "cannot make 99 folds; use fewer"),
    (["run", "--models", "iris,foo"], "unknown model 'foo'; choose one of"),
    (["serve", "--models", ","], "--models ',' names no model; pass e.g. iris,mnist or all"),
    (["models", "list", "irs"], "unknown model 'irs'; choose one of"),
    (["loadtest", "--url", DEAD, "--requests", "0"], "must be at least 1"),
    (["loadtest", "--url", DEAD, "--retries", "-1"], "--retries must be >= 0"),
    (
        ["predict", "--model", "iris", "--url", "no-scheme", "--input", "[[1, 2, 3, 4]]"],
        "missing an 'http://' or 'https://' protocol",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), WRONG_VALUES, ids=[_id(a) for a, _ in WRONG_VALUES])
def test_wrong_values_are_refused_in_one_line(capsys, files, argv, expected):
    assert expected in one_line_error(capsys, argv)


def _file_cases():
    row = "[[5.1, 3.5, 1.4, 0.2]]"
    return [  # (argv with {tmp} for the test's folder, what the line must say)
        (["train", "--model", "iris", "--data", "{tmp}/garbage.csv", "--target", "y"],
         ["as CSV", "check the file's format"]),
        (["train", "--model", "iris", "--data", "{tmp}/broken.parquet", "--target", "y"],
         ["as Parquet", "check the file's format"]),
        (["train", "--model", "iris", "--data", "{tmp}/table.csv"], ["pass --target COLUMN"]),
        (["train", "--model", "mnist", "--data", "torchvision", "--data-dir", "{tmp}/no-mnist"],
         ["full MNIST not found under", "add --download"]),
        (["predict", "--model", "iris", "--input", "{tmp}/bad.json"], ["is not valid JSON", "example:"]),
        (["predict", "--model", "iris", "--input", "{tmp}/deep.json"], ["nests deeper", "lists of numbers"]),
        (["predict", "--model", "iris", "--input", "{tmp}/empty.csv"], ["as CSV", "header row"]),
        (["predict", "--model", "iris", "--input", "{tmp}/garbage.csv"], ["as CSV", "header row"]),
        (["predict", "--model", "iris", "--input", "{tmp}/words.csv"], ["'abc' is not a finite number"]),
        (["predict", "--model", "iris", "--input", "{tmp}/folder.json"], ["not found; pass an existing"]),
        (["predict", "--model", "iris", "--input", "[[1" + "0" * 400 + ", 1, 2, 3]]"],
         ["is not a finite number; send numbers only"]),
        (["predict", "--model", "iris", "--input", "[[1e308, 1e308, 1e308, 1e308]]"],
         ["values too large for this model", "range of the training data"]),
        (["predict", "--model", "iris", "--image", "{tmp}/digit.png"], ["takes feature rows, not images"]),
        (["predict", "--model", "iris", "--url", DEAD, "--image", "{tmp}/digit.png"],
         ["image file", "not found; pass an existing PNG"]),
        (["models", "list", "--store", "{tmp}/a-file"], ["is a file, not a folder", "--store"]),
        (["predict", "--model", "iris", "--store", "{tmp}/a-file", "--input", row],
         ["is a file, not a folder"]),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"), _file_cases(), ids=[_id(a) for a, _ in _file_cases()]
)
def test_broken_and_missing_files_are_refused_in_one_line(capsys, files, argv, expected):
    line = one_line_error(capsys, [arg.replace("{tmp}", str(files)) for arg in argv])
    for fragment in expected:
        assert fragment in line


OVERLAYS = [  # (file, its new text, what the line must say)
    ("local.yaml", "http_options:\n  host: [127.0.0.1\n", ["is not valid YAML at line", "fix it"]),
    ("local.yaml", "store:\tx\n", ["is not valid YAML at line 1, column 7"]),
    ("local.yaml", "- a\n- b\n", ["must hold a mapping at the top level"]),
    ("local.yaml", "model_deployment: fast\n", ["model_deployment must be a mapping"]),
    ("eks.yaml", "apps:\n  mnist: 5\n", ["apps.mnist must be a mapping"]),
    ("local.yaml", "cluster_env: [A, B]\n", ["cluster_env must be a mapping"]),
    (
        "local.yaml",
        "model_deployment:\n  max_ongoing_requests: lots\n",
        ["max_ongoing_requests: Input should be a valid integer", "fix serve_apps/config"],
    ),
    ("local.yaml", "store: 5\n", ["invalid args: store: Input should be a valid string"]),
    ("local.yaml", "http_options: {port: eighty}\n", ["http_options.port: Input should be"]),
    (
        "eks.yaml",
        "apps: {resnet: {num_cpus: 1}}\n",
        ["apps ['resnet'] are not dedicated models or the pool"],
    ),
    ("eks.yaml", None, ["eks.yaml not found; environments: local, eks"]),
    ("base.yaml", "http_options: {host: 127.0.0.1}\n", ["applications: Field required"]),
    (
        "base.yaml",
        "applications:\n  - name: iris\n",
        ["applications.0.import_path: Field required"],
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "expected"), OVERLAYS, ids=[f"{n}:{e[0][:30]}" for n, _, e in OVERLAYS]
)
def test_malformed_serve_configs_are_refused_and_nothing_is_written(
    capsys, home, tmp_path, monkeypatch, name, text, expected
):
    config = tmp_path / "config"
    shutil.copytree(serve_config.CONFIG_DIR, config)
    if text is None:
        (config / name).unlink()
    else:
        (config / name).write_text(text)
    monkeypatch.setattr(serve_config, "CONFIG_DIR", config)
    monkeypatch.setattr(serve_config, "RENDERED_DIR", tmp_path / "rendered")
    line = one_line_error(capsys, ["serve-configs"])
    for fragment in expected:
        assert fragment in line
    assert not (tmp_path / "rendered").exists() or not os.listdir(tmp_path / "rendered")


def _other_schema(store):
    """A version stored under iris that takes ionosphere's 33 features."""
    return store.register(replace(quick_artifact("ionosphere", epochs=0), model="iris"))


def _corrupt_history(store):
    version = store.resolve("iris")
    assert main(["promote", "iris", store.register(quick_artifact("iris", epochs=0))]) == 0
    path = store.location("iris", history.HISTORY_FILE)
    with open(path, "a") as handle:
        handle.write('{"action": "promote", "to_ver\n')
    return version


PROMOTION_CASES = [  # (id, setup(store) -> the version argv names, argv, what the line must say)
    ("other model's schema", _other_schema, ["promote", "iris", "{v}"],
     ["cannot replace champion", "another model's schema", "trained on iris's features"]),
    ("schema with --force", _other_schema, ["promote", "iris", "{v}", "--force"],
     ["another model's schema", "--force does not override this"]),
    ("no previous champion", None, ["rollback", "iris"],
     ["iris has no previous champion in", "HISTORY.jsonl", "raylife promote iris VERSION"]),
    ("nothing promoted", None, ["rollback", "boston"],
     ["boston has no champion to roll back from", "raylife promote boston VERSION"]),
    ("corrupt history: promote", _corrupt_history, ["promote", "iris", "{v}"],
     ["HISTORY.jsonl line 2 is not a history entry", "repair or delete that line"]),
    ("corrupt history: rollback", _corrupt_history, ["rollback", "iris"],
     ["HISTORY.jsonl line 2 is not a history entry", "the pointer is where it was"]),
    ("corrupt history: history", _corrupt_history, ["models", "history", "iris"],
     ["HISTORY.jsonl line 2 is not a history entry", "repair or delete that line"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "argv", "expected"),
    [case[1:] for case in PROMOTION_CASES],
    ids=[case[0] for case in PROMOTION_CASES],
)
def test_promotion_mistakes_leave_the_pointer_where_it_was(
    capsys, home, files, setup, argv, expected
):
    store = ModelStore(str(home / "store"))
    version = setup(store) if setup else ""
    capsys.readouterr()
    before = {model: store.pointer(model) for model in ("iris", "boston")}
    line = one_line_error(capsys, [arg.replace("{v}", version) for arg in argv])
    for fragment in expected:
        assert fragment in line
    assert {model: store.pointer(model) for model in ("iris", "boston")} == before
