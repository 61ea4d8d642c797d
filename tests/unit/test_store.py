import json
import multiprocessing
from pathlib import Path

import pytest

from raylife.errors import ArtifactError, RaylifeError
from raylife.lifecycle.store import COMPLETE_MARKER, ModelStore

from ..conftest import quick_artifact


@pytest.fixture(scope="module")
def iris_artifact():
    return quick_artifact("iris")


def test_round_trip_keeps_everything(tmp_path, iris_artifact):
    store = ModelStore(str(tmp_path))
    version = store.register(iris_artifact)
    loaded_version, loaded = store.load("iris", version)
    assert loaded_version == version
    assert (
        loaded.model_args == iris_artifact.model_args
        and loaded.label_names == iris_artifact.label_names
    )
    assert (
        loaded.preprocessing == iris_artifact.preprocessing
        and loaded.schema == iris_artifact.schema
    )
    assert all((loaded.state_dict[k] == v).all() for k, v in iris_artifact.state_dict.items())
    meta = store.metadata("iris", version)
    for key in ("weights_sha256", "created_at", "environment", "data", "run", "metrics", "schema"):
        assert meta[key], key
    assert {"torch", "ray", "git_commit", "python"} <= set(meta["environment"])


def test_versions_sort_by_creation_and_resolve(tmp_path, iris_artifact):
    store = ModelStore(str(tmp_path))
    first, second = store.register(iris_artifact), store.register(iris_artifact)
    assert store.versions("iris") == sorted([first, second]) and first < second
    assert store.resolve("iris", "latest") == second
    with pytest.raises(
        RaylifeError, match="no promoted version of 'iris'; run: raylife promote iris"
    ):
        store.resolve("iris")
    with pytest.raises(RaylifeError, match="version 'nope' of 'iris' does not exist"):
        store.resolve("iris", "nope")
    with pytest.raises(RaylifeError, match="no versions of 'boston'.*raylife train --model boston"):
        store.resolve("boston")


def test_promotion_moves_the_pointer(tmp_path, iris_artifact):
    store = ModelStore(str(tmp_path))
    first, second = store.register(iris_artifact), store.register(iris_artifact)
    assert store.promote("iris", first).generation == 1
    pointer = store.promote("iris", second)
    assert (pointer.version, pointer.generation) == (second, 2)
    assert store.resolve("iris") == second


def test_crash_during_write_leaves_no_visible_version(tmp_path, iris_artifact, monkeypatch):
    store = ModelStore(str(tmp_path))
    calls = {"n": 0}
    import raylife.storage as storage_module

    real = storage_module._write_synced

    def failing(path, payload):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(path, payload)

    monkeypatch.setattr(storage_module, "_write_synced", failing)
    with pytest.raises(OSError, match="disk full"):
        store.register(iris_artifact)
    assert store.versions("iris") == []
    assert list((tmp_path / "iris").iterdir()) == []  # staging folder cleaned up


def test_unfinished_upload_is_invisible(tmp_path, iris_artifact):
    store = ModelStore(str(tmp_path))
    version = store.register(iris_artifact)
    (
        tmp_path / "iris" / version / COMPLETE_MARKER
    ).unlink()  # as an S3 upload cut before its marker
    assert store.versions("iris") == []


def test_tampered_and_truncated_weights_are_refused(tmp_path, iris_artifact):
    store = ModelStore(str(tmp_path))
    version = store.register(iris_artifact)
    weights = tmp_path / "iris" / version / "weights.pt"
    original = weights.read_bytes()
    weights.write_bytes(original[:-100])
    with pytest.raises(ArtifactError, match="checksum mismatch.*corrupt or was modified"):
        store.load("iris", version)
    with pytest.raises(ArtifactError):
        store.promote("iris", version)  # never promote a corrupt artifact
    weights.write_bytes(original)
    meta = tmp_path / "iris" / version / "artifact.json"
    meta.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        store.load("iris", version)


def _promote_many(args):
    root, versions = args
    store = ModelStore(root)
    for version in versions:
        store.promote("iris", version)


def test_concurrent_promotions_never_corrupt_the_pointer(tmp_path, iris_artifact):
    store = ModelStore(str(tmp_path))
    versions = [store.register(iris_artifact) for _ in range(3)]
    jobs = [(str(tmp_path), versions[i % 3 :] + versions[: i % 3]) for i in range(4)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_promote_many, jobs)
    pointer = json.loads((tmp_path / "iris" / "PROMOTED").read_text())
    assert pointer["version"] in versions
    assert pointer["generation"] == 12  # every promotion counted: none lost to a race
    assert not [p for p in Path(tmp_path, "iris").iterdir() if p.name.startswith(".PROMOTED.")]
