"""CLI errors: one line naming the problem and the fix, exit code 2, no traceback, store intact."""

import json

import pytest

from raylife.cli import EXIT_USER_ERROR, main
from raylife.lifecycle.store import ModelStore

from ..conftest import prepared, quick_artifact


@pytest.fixture
def store_with_iris(home):
    store = ModelStore(str(home / "store"))
    version = store.register(quick_artifact("iris"))
    return store, version


def _error(capsys, argv):
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("raylife: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_unknown_model(capsys, home):
    assert "choose one of: ionosphere, iris, boston, mnist" in _error(
        capsys, ["train", "--model", "irs"]
    )
    assert "choose one of" in _error(capsys, ["promote", "irs", "latest"])


def test_bad_hyperparameters_fail_before_ray(capsys, home):
    assert "lr must be a positive number" in _error(
        capsys, ["train", "--model", "iris", "--lr", "-1"]
    )
    assert "num workers must be >= 1" in _error(
        capsys, ["train", "--model", "iris", "--num-workers", "0"]
    )
    assert "workers per trial must be >= 1" in _error(
        capsys, ["tune", "--model", "iris", "--num-workers", "0"]
    )


def test_missing_data_file_and_target_column(capsys, home, tmp_path):
    err = _error(
        capsys, ["train", "--model", "iris", "--data", str(tmp_path / "none.csv"), "--target", "y"]
    )
    assert "not found; pass an existing CSV" in err
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n3,4\n")
    assert "target column 'y' not in" in _error(
        capsys, ["train", "--model", "iris", "--data", str(table), "--target", "y"]
    )


def test_resume_of_unknown_run(capsys, home):
    assert "no run named 'ghost'" in _error(
        capsys, ["train", "--model", "iris", "--resume", "ghost"]
    )


def test_predict_promote_list_show(capsys, store_with_iris):
    _, version = store_with_iris
    assert main(["promote", "iris", version]) == 0
    assert f"promoted iris -> {version} (generation 1)" in capsys.readouterr().out
    assert main(["predict", "--model", "iris", "--input", "[[5.1, 3.5, 1.4, 0.2]]"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == version and answer["predictions"][0]["label"]
    assert main(["models", "list"]) == 0
    assert f"* iris        {version}" in capsys.readouterr().out
    assert main(["models", "show", "iris"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == version


def test_predict_from_csv_file(capsys, store_with_iris, tmp_path):
    _, version = store_with_iris
    names = prepared("iris").schema.feature_names
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(names) + "\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    assert main(["predict", "--model", "iris", "--version", version, "--input", str(rows)]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) == 2


def test_predict_errors(capsys, store_with_iris):
    _, version = store_with_iris
    assert "no promoted version" in _error(
        capsys, ["predict", "--model", "iris", "--input", "[[1,2,3,4]]"]
    )
    assert "does not exist" in _error(
        capsys,
        [
            "predict",
            "--model",
            "iris",
            "--version",
            "20990101-000000-000000",
            "--input",
            "[[1,2,3,4]]",
        ],
    )
    assert "not valid JSON" in _error(
        capsys, ["predict", "--model", "iris", "--version", version, "--input", "[[1,2"]
    )
    assert "got 3 values, the model takes 4" in _error(
        capsys, ["predict", "--model", "iris", "--version", version, "--input", "[[1,2,3]]"]
    )
    assert "nan is not a finite number" in _error(
        capsys, ["predict", "--model", "iris", "--version", version, "--input", "[[1,2,3,NaN]]"]
    )
    assert "input file" in _error(
        capsys, ["predict", "--model", "iris", "--version", version, "--input", "missing.csv"]
    )
    assert "no versions of 'boston'" in _error(
        capsys, ["predict", "--model", "boston", "--input", "[[1]]"]
    )


def test_corrupt_artifact_is_refused_and_left_alone(capsys, store_with_iris, home):
    store, version = store_with_iris
    weights = home / "store" / "iris" / version / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:50])
    before = sorted(p.name for p in (home / "store" / "iris").iterdir())
    assert "checksum mismatch" in _error(
        capsys, ["predict", "--model", "iris", "--version", version, "--input", "[[1,2,3,4]]"]
    )
    assert "checksum mismatch" in _error(capsys, ["promote", "iris", version])
    assert sorted(p.name for p in (home / "store" / "iris").iterdir()) == before
    assert store.pointer("iris") is None


def test_bad_flag_types_are_argparse_errors(capsys, home):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--model", "iris", "--hidden-sizes", "a,b"])
    assert exc.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_http_verbs_name_an_unreachable_or_empty_server(capsys, home):
    from raylife.cluster import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    row = "[[5.1, 3.5, 1.4, 0.2]]"
    assert "is `raylife serve` running?" in _error(
        capsys, ["predict", "--model", "iris", "--url", url, "--input", row]
    )
    assert "is `raylife serve` running?" in _error(capsys, ["loadtest", "--url", url])
    assert "nothing to serve" in _error(capsys, ["serve", "--models", "iris"])
    assert "raylife promote MODEL VERSION" in _error(capsys, ["serve", "--models", "iris"])


def test_batch_timings_never_print_a_positive_window_as_zero():
    from raylife.cli.models import _seconds

    # A 30-row table scores in milliseconds; "0.0 s" would read as no work (and CI once saw it).
    assert [_seconds(v) for v in (0.0123, 0.9994, 5.88, 1234.5)] == [
        "0.012",
        "0.999",
        "5.9",
        "1234.5",
    ]
