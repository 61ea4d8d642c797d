"""`raylife batch-predict` on the session cluster: a multi-part Parquet table and a PNG folder,
scored by the actor pool, equal to `raylife predict` row for row; an actor's bad row, one line."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raylife.cli import main
from raylife.lifecycle.store import COMPLETE_MARKER, ModelStore
from tests.conftest import prepared, quick_artifact
from tests.unit.test_batch_predict import assert_same_answers, write_parts


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(str(tmp_path_factory.mktemp("batch") / "store"))
    for model in ("iris", "mnist"):
        store.promote(model, store.register(quick_artifact(model)))
    return store


def predicted(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_a_parquet_table_round_trip_equals_predict(store, tmp_path, capsys):
    import pandas as pd

    X, names = prepared("iris").test_raw.X, list(prepared("iris").schema.feature_names)
    write_parts(tmp_path / "in", X, names, parts=3)
    out = tmp_path / "out"
    argv = [
        "batch-predict",
        "--model",
        "iris",
        "--store",
        store.uri,
        "--input",
        str(tmp_path / "in"),
    ]
    assert main([*argv, "--output", str(out), "--actors", "2", "--batch-size", "8"]) == 0
    said = capsys.readouterr().out
    assert f"{len(X)} rows" in said
    # The whole call and, inside it, the actors' scoring window (the part that grows with rows).
    whole, scoring = re.search(r" in ([\d.]+) s .*scoring ([\d.]+) s", said).groups()
    assert 0 < float(scoring) <= float(whole)
    assert json.loads((out / COMPLETE_MARKER).read_text())["rows"] == len(X)
    table = pq.read_table(out).sort_by("row_id")
    pd.DataFrame(X, columns=names).to_csv(tmp_path / "rows.csv", index=False)
    answers = predicted(
        capsys,
        ["predict", "--model", "iris", "--store", store.uri, "--input", str(tmp_path / "rows.csv")],
    )
    assert_same_answers(table.to_pylist(), answers["predictions"], answers["version"])
    # A second run is refused (the output is complete) and changes nothing.
    assert main([*argv, "--output", str(out)]) == 2
    assert "already complete" in capsys.readouterr().err
    assert pq.read_table(out).num_rows == len(X)


def test_a_png_folder_round_trip_equals_predict(store, tmp_path, capsys):
    from PIL import Image

    images = prepared("mnist").test_raw.X[:5].reshape(5, 28, 28).astype(np.uint8)
    for i, pixels in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        (tmp_path / "in" / str(i % 2)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / str(i % 2) / f"{i}.png").write_bytes(buffer.getvalue())
    out = tmp_path / "out"
    argv = ["--model", "mnist", "--store", store.uri]
    assert (
        main(
            [
                "batch-predict",
                *argv,
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(out),
                "--actors",
                "1",
            ]
        )
        == 0
    )
    rows = {row["path"]: row for row in pq.read_table(out).to_pylist()}
    assert len(rows) == 5
    for path, row in rows.items():
        answer = predicted(capsys, ["predict", *argv, "--image", str(tmp_path / "in" / path)])
        assert_same_answers([row], answer["predictions"], answer["version"])


def test_a_bad_row_found_by_an_actor_is_one_line_and_no_output(store, tmp_path, capsys):
    X, names = prepared("iris").test_raw.X.copy(), list(prepared("iris").schema.feature_names)
    X[5, 0] = np.inf
    write_parts(tmp_path / "in", X, names, parts=1)
    argv = ["batch-predict", "--model", "iris", "--store", store.uri, "--actors", "1"]
    assert main([*argv, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 2
    [err] = [line for line in capsys.readouterr().err.splitlines() if "raylife: error" in line]
    assert "part-0.parquet: row with id 5 has" in err and "fix or drop such rows" in err
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["in"]


def test_the_batch_bench_section_at_smoke_size(home):
    # The section's own code path (`raylife bench --sections batch --quick`), with its figures.
    from raylife.settings import Settings
    from raylife_dev.bench import batch_bench

    section = batch_bench.run(Settings.from_env(), quick=True, say=lambda _: None)
    for contender in ("plain", "ray 1 actor", "ray 2 actors"):
        assert section.figures[f"{contender} rows_per_s"].median > 0
    assert section.figures["ray 2 actors fixed_seconds"].median > 0
    assert [c.name for c in section.checks][-1].startswith("batch-predict (2 actors) scoring")
