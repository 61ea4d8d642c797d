"""The model artifact: everything needed to rebuild, check and serve one trained model.

On storage an artifact is two files: `weights.pt` (a state_dict, loaded with weights_only=True) and
`artifact.json` (architecture, model args, task, preprocessing, label names, input schema, metrics,
history, run config, data provenance, library versions, git commit, created time and the weights'
sha256). Serving never refits anything: the preprocessing statistics travel here.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import raylife
from raylife.data.contracts import InputSchema, Preprocessing
from raylife.errors import ArtifactError

WEIGHTS_FILE = "weights.pt"
META_FILE = "artifact.json"
FORMAT_VERSION = 1


@dataclass
class Artifact:
    model: str
    """Registry key of the model."""
    architecture: str
    model_args: dict[str, Any]
    task: str
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing
    schema: InputSchema
    label_names: list[str] | None
    metrics: dict[str, float]
    """Best validation metrics of the run (and test metrics once evaluated)."""
    history: list[dict[str, float]] = field(default_factory=list)
    """Per-epoch train/validation metrics of the run that produced the weights."""
    run: dict[str, Any] = field(default_factory=dict)
    """How it was trained: hyperparameters, workers, seed, run name, checkpoint, sweep trial."""
    data: dict[str, Any] = field(default_factory=dict)
    """Data provenance: source, origin, split sizes and seed, sha256 of the raw data."""
    environment: dict[str, Any] = field(default_factory=dict)
    declaration: dict[str, Any] = field(default_factory=dict)
    """The model's declaration file when trained: path, sha256 and text (rebuild any version)."""
    code: dict[str, Any] | None = None
    """A user factory's module: name, file, sha256, source and git commit (raylife.catalog.user_code)."""
    exported: dict[str, Any] = field(default_factory=dict)
    """A user factory's torch.export program: its files' sha256, or the reason export failed
    (raylife.lifecycle.exported); empty for built-in architectures and unregistered checkpoints."""
    program: Any = None
    """The loaded exported program (not serialized): what build_module returns when present."""
    program_files: dict[str, bytes] = field(default_factory=dict)
    """The exported program's files, written beside the weights at registration."""
    profile: dict[str, Any] = field(default_factory=dict)
    """The reference profile of its training data and validation predictions
    (raylife.data.profile.Profile as a dict; empty for versions older than profiles)."""
    created_at: str = ""
    weights_sha256: str = ""

    def weights_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(self.state_dict, buffer)
        return buffer.getvalue()

    def to_files(self) -> dict[str, bytes]:
        """The files of this artifact; stamps created time, environment and checksum."""
        weights = self.weights_bytes()
        self.weights_sha256 = hashlib.sha256(weights).hexdigest()
        self.created_at = self.created_at or datetime.now(UTC).isoformat(timespec="seconds")
        self.environment = self.environment or environment_info()
        meta = {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "architecture": self.architecture,
            "model_args": self.model_args,
            "task": self.task,
            "preprocessing": self.preprocessing.to_dict(),
            "schema": self.schema.to_dict(),
            "label_names": self.label_names,
            "metrics": self.metrics,
            "history": self.history,
            "run": self.run,
            "data": self.data,
            "environment": self.environment,
            "declaration": self.declaration,
            "code": self.code,
            "exported": self.exported,
            "profile": self.profile,
            "created_at": self.created_at,
            "weights_sha256": self.weights_sha256,
        }
        return {
            WEIGHTS_FILE: weights,
            META_FILE: json.dumps(meta, indent=2, default=str).encode(),
            **self.program_files,
        }

    @classmethod
    def from_files(cls, meta_bytes: bytes, weights: bytes, where: str) -> Artifact:
        """Parse and verify; any inconsistency is an ArtifactError naming the version."""
        try:
            meta = json.loads(meta_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(
                f"{where}: {META_FILE} is not valid JSON ({exc}); re-register the model"
            ) from exc
        actual = hashlib.sha256(weights).hexdigest()
        if actual != meta.get("weights_sha256"):
            raise ArtifactError(
                f"{where}: weights checksum mismatch (file {actual[:12]}..., recorded "
                f"{str(meta.get('weights_sha256'))[:12]}...): the artifact is corrupt or was modified; "
                "promote another version or retrain"
            )
        try:
            state_dict = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
            return cls(
                model=meta["model"],
                architecture=meta["architecture"],
                model_args=meta["model_args"],
                task=meta["task"],
                state_dict=state_dict,
                preprocessing=Preprocessing.from_dict(meta["preprocessing"]),
                schema=InputSchema.from_dict(meta["schema"]),
                label_names=meta["label_names"],
                metrics=meta["metrics"],
                history=meta.get("history", []),
                run=meta.get("run", {}),
                data=meta.get("data", {}),
                environment=meta.get("environment", {}),
                declaration=meta.get("declaration") or {},
                code=meta.get("code"),
                exported=meta.get("exported") or {},
                profile=meta.get("profile") or {},
                created_at=meta.get("created_at", ""),
                weights_sha256=meta["weights_sha256"],
            )
        except (KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise ArtifactError(
                f"{where}: artifact is incomplete or unreadable ({exc}); re-register the model"
            ) from exc

    def build_module(self) -> torch.nn.Module:
        # lazy: imports torch, needed only on this path
        from raylife.catalog import user_code
        from raylife.catalog.architectures import build_model

        if self.program is not None:  # a user factory's exported program: no user code needed
            return self.program
        if self.code is not None:
            user_code.ensure(self.code, f"{self.model} ({self.architecture})")
        module = build_model(self.architecture, self.model_args)
        module.load_state_dict(self.state_dict)
        return module.eval()

    def attach_program(self) -> None:
        """Export a user factory's module (raylife.lifecycle.exported) so that serving this
        version needs no user code; a model torch.export refuses records why instead."""
        if self.code is None or self.exported:
            return
        # lazy: torch.export is loaded only for user factories, at registration
        from raylife.lifecycle import exported

        # two rows: torch.export specialises a batch of one, and the batch dimension must stay free
        example = torch.as_tensor(self.preprocessing.transform(self.schema.example_batch(2)))
        self.exported, self.program_files = exported.export(self.build_module(), example)

    def load_program(self, read: Any, where: str) -> None:
        """Load the exported program recorded in artifact.json (`read(name)` gives a file)."""
        if self.exported.get("files"):
            # lazy: torch.export is loaded only for user factories' versions
            from raylife.lifecycle import exported

            self.program = exported.load(self.exported, read, where)


def environment_info() -> dict[str, Any]:
    import ray

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "raylife": raylife.__version__,
        "git_commit": git_commit(),
    }


def git_commit() -> str:
    """Commit of the raylife checkout (with '-dirty' for local changes); 'unknown' outside git."""
    try:
        sha = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=True
    )
    return result.stdout.strip()
