"""Every load of weights or training state refuses pickled code (torch.load weights_only=True):
a file that would run a command when unpickled is refused with one line, and the command never
runs. Behavioural: the loads raylife really does, on files an attacker could plant."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from raylife.errors import RaylifeError
from raylife.lifecycle.artifact import META_FILE, WEIGHTS_FILE
from raylife.lifecycle.store import ModelStore
from raylife.training.train import TRAIN_STATE_FILE, load_train_state

from ..conftest import quick_artifact


class _RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile(folder: Path, name: str) -> tuple[Path, bytes]:
    marker = folder / "the-payload-ran"
    path = folder / name
    torch.save({"state": _RunsCode(marker)}, path)
    return marker, path.read_bytes()


def test_a_store_version_with_pickled_code_is_refused(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    version = store.register(quick_artifact("iris", epochs=0))
    folder = tmp_path / "store" / "iris" / version
    marker, payload = _hostile(tmp_path, "evil.pt")
    (folder / WEIGHTS_FILE).write_bytes(payload)
    # The attacker also rewrites the recorded checksum, so only weights_only stands in the way.
    meta = json.loads((folder / META_FILE).read_text())
    meta["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(RaylifeError, match="unreadable"):
        store.load("iris", version)
    assert not marker.exists(), "unpickling ran the payload"


def test_a_checkpoint_with_pickled_training_state_is_refused(tmp_path):
    marker, _ = _hostile(tmp_path, TRAIN_STATE_FILE)
    with pytest.raises(RaylifeError, match="not written by raylife"):
        load_train_state(tmp_path)
    assert not marker.exists(), "unpickling ran the payload"


def test_the_payload_would_run_without_weights_only(tmp_path):
    """The test's own control: the file really is hostile."""
    marker, _ = _hostile(tmp_path, "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert marker.exists()
