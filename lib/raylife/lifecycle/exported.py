"""A user factory's model as a `torch.export` program, so serving needs no user code.

When a version of a user-factory model is registered, its module is exported with a dynamic batch
dimension and stored beside the weights as four files (the graph as JSON, its parameters, its
constants, its example inputs). Replicas, batch actors and `raylife predict` then run that
program instead of importing the factory; when export fails, the artifact says why and serving
imports the declared code (raylife.catalog.user_code). The built-in architectures ship with
raylife, so they are not exported: their eager modules need nothing from the user.

Loading stays free of pickle: `torch.export.load` unpickles (its documentation says so), so the
program is read with torch's serde (`deserialize`), handed tensors that `torch.load` read with
`weights_only=True`, and every file is checked against its recorded sha256 first.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any

import torch

from raylife.errors import ArtifactError

PROGRAM_FILES = {
    "exported_program": "program.json",
    "state_dict": "program_state.pt",
    "constants": "program_constants.pt",
    "example_inputs": "program_inputs.pt",
}
TOLERANCE = 1e-5
"""Largest absolute difference allowed between the program's and the eager module's outputs on the
export sample; above it the program is not kept (tests/unit/test_exported.py holds the same bar on
the test split)."""


def export(
    module: torch.nn.Module, example: torch.Tensor
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(record for artifact.json, files) of `module` exported on `example` (a batch of >= 2), or
    ({"error": why}, {}) when torch.export cannot take it or its answers differ."""
    from torch._export.serde import serialize as serde
    from torch.export import Dim

    module = module.eval()
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: Dim.AUTO},))
        artifact = serde.serialize(program)
        rebuilt = _deserialize({key: getattr(artifact, key) for key in PROGRAM_FILES})
        with torch.no_grad():
            for rows in (1, len(example)):
                gap = (rebuilt(example[:rows]) - module(example[:rows])).abs().max().item()
                if not gap <= TOLERANCE:
                    return {"error": f"exported answers differ from eager by {gap:.2e}"}, {}
    except Exception as exc:  # torch.export refuses many things: keep the reason, serve eagerly
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}, {}
    files = {PROGRAM_FILES[key]: getattr(artifact, key) for key in PROGRAM_FILES}
    record = {
        "torch": torch.__version__,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    return record, files


def load(record: dict[str, Any], read: Callable[[str], bytes], where: str) -> Callable[..., Any]:
    """The program's callable module, from files verified against `record` (ArtifactError else)."""
    blobs: dict[str, bytes] = {}
    for key, name in PROGRAM_FILES.items():
        data = read(name)
        if hashlib.sha256(data).hexdigest() != record["files"][name]:
            raise ArtifactError(
                f"{where}: {name} checksum mismatch: the exported program is corrupt; re-register"
            )
        blobs[key] = data
    try:
        return _deserialize(blobs)
    except Exception as exc:  # a program of another torch, or damaged: name it
        raise ArtifactError(
            f"{where}: cannot load the exported program (saved by torch {record.get('torch')}, "
            f"this is {torch.__version__}): {type(exc).__name__}: {exc}"
        ) from exc


def _deserialize(blobs: dict[str, bytes]) -> Callable[..., Any]:
    from torch._export.serde import serialize as serde

    def tensors(data: bytes) -> Any:
        return torch.load(io.BytesIO(data), weights_only=True) if data else {}

    artifact = serde.SerializedArtifact(
        blobs["exported_program"],
        tensors(blobs["state_dict"]),
        tensors(blobs["constants"]),
        tensors(blobs["example_inputs"]),
    )
    module: Callable[..., Any] = serde.deserialize(artifact).module()
    return module
