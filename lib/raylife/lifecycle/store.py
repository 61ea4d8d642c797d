"""The model store: versions, their metrics, and which version serves (the promotion pointer).

Layout (local folder or s3://bucket/prefix):
    <store>/<model>/<version>/weights.pt     state_dict
    <store>/<model>/<version>/artifact.json  everything else (see artifact.py)
    <store>/<model>/<version>/_COMPLETE      written last: a version without it does not exist
    <store>/<model>/PROMOTED                 {"version": ..., "generation": n, "promoted_at": ...}
    <store>/<model>/HISTORY.jsonl            promotions, refusals, rollbacks (see history.py)

Visibility (raylife.storage.write_folder): locally a version is written into a hidden temp folder and renamed into place (atomic);
on S3, where there is no rename, the files go first and the _COMPLETE marker last. Promotions take a
file lock locally and replace the pointer atomically (os.replace); on S3 a PUT is atomic, so
concurrent promotions resolve to one of the requested versions, never to a torn pointer.
Per-model files beside the versions (the history) are replaced the same way, under the same lock.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raylife import storage
from raylife.errors import ArtifactError, RaylifeError
from raylife.lifecycle.artifact import META_FILE, WEIGHTS_FILE, Artifact
from raylife.storage import COMPLETE_MARKER

POINTER_FILE = "PROMOTED"
_VERSION_RE = re.compile(r"^\d{8}-\d{6}-\d{6}$")


def new_version_id() -> str:
    """Sortable by creation time: YYYYMMDD-HHMMSS-microseconds (UTC)."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


@dataclass(frozen=True)
class Pointer:
    version: str
    generation: int
    """Counts promotions of this model; Serve replicas reload when it changes."""
    promoted_at: str


class ModelStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.root = storage.locate(uri, "model store")
        if self.root.is_local and Path(self.root.path).is_file():
            raise RaylifeError(
                f"model store {uri!r} is a file, not a folder; pass a folder or "
                "s3://bucket/prefix (--store or $RAYLIFE_STORE)"
            )

    def _read(self, rel: str) -> bytes:
        try:
            return storage.read_bytes(self.root, rel)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise FileNotFoundError(rel) from exc

    # ---- versions ----------------------------------------------------------------------------

    def register(self, artifact: Artifact) -> str:
        """Store a new version of artifact.model; returns its version id."""
        artifact.attach_program()  # a user factory's torch.export program (needs no user code)
        files = artifact.to_files()
        for _ in range(3):  # two registrations in the same microsecond: retry with a fresh id
            version = new_version_id()
            try:
                storage.write_folder(self.root.joined(f"{artifact.model}/{version}"), files)
                return version
            except FileExistsError:
                continue
            except OSError as exc:
                if "exists" in str(exc) or "not empty" in str(exc).lower():
                    continue
                raise
        raise RaylifeError("could not allocate a unique version id; try again")

    def models(self) -> list[str]:
        return storage.list_dirs(self.root)

    def versions(self, model: str) -> list[str]:
        """Complete versions, oldest first. Staging folders and unfinished uploads are invisible."""
        return [
            v
            for v in storage.list_dirs(self.root, model)
            if _VERSION_RE.match(v) and storage.exists(self.root, f"{model}/{v}/{COMPLETE_MARKER}")
        ]

    def resolve(self, model: str, version: str | None = None) -> str:
        """A concrete version: the given one, 'latest', or (None/'promoted') the promoted one."""
        versions = self.versions(model)
        if not versions:
            raise RaylifeError(
                f"no versions of {model!r} in store {self.uri}; train one first: raylife train --model {model}"
            )
        if version in (None, "promoted"):
            pointer = self.pointer(model)
            if pointer is None:
                raise RaylifeError(
                    f"no promoted version of {model!r}; run: raylife promote {model} {versions[-1]}"
                )
            return pointer.version
        if version == "latest":
            return versions[-1]
        if version not in versions:
            raise RaylifeError(
                f"version {version!r} of {model!r} does not exist; existing: {', '.join(versions[-5:])} "
                f"(see: raylife models list {model})"
            )
        return version

    def load(self, model: str, version: str | None = None) -> tuple[str, Artifact]:
        """(version, verified artifact). Corrupt or tampered files raise ArtifactError."""
        version = self.resolve(model, version)
        where = f"{model}/{version}"
        try:
            meta = self._read(f"{where}/{META_FILE}")
            weights = self._read(f"{where}/{WEIGHTS_FILE}")
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"{where}: file {exc} is missing; the version is corrupt, promote another"
            ) from exc
        artifact = Artifact.from_files(meta, weights, where=where)
        try:
            artifact.load_program(lambda name: self._read(f"{where}/{name}"), where)
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"{where}: file {exc} is missing; the version is corrupt, promote another"
            ) from exc
        return version, artifact

    def metadata(self, model: str, version: str) -> dict[str, Any]:
        """artifact.json of a version, without loading weights (for listings)."""
        try:
            meta: dict[str, Any] = json.loads(self._read(f"{model}/{version}/{META_FILE}"))
            return meta
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{model}/{version}: unreadable {META_FILE} ({exc})") from exc

    # ---- per-model files (the history) -------------------------------------------------------

    def read_model_file(self, model: str, name: str) -> bytes | None:
        """A file beside the versions of `model`; None when it does not exist."""
        try:
            return self._read(f"{model}/{name}")
        except FileNotFoundError:
            return None

    def replace_model_file(self, model: str, name: str, payload: bytes) -> None:
        """Atomically replace a file beside the versions (hold promotion_lock while editing it)."""
        storage.replace_file(self.root, f"{model}/{name}", payload)

    def location(self, model: str, name: str) -> str:
        """Where a per-model file lives, for messages (an s3:// URI loses its query string)."""
        return f"{self.uri.split('?')[0].rstrip('/')}/{model}/{name}"

    # ---- promotion ---------------------------------------------------------------------------

    def pointer(self, model: str) -> Pointer | None:
        try:
            data = json.loads(self._read(f"{model}/{POINTER_FILE}"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ArtifactError(
                f"{model}/{POINTER_FILE} is corrupt ({exc}); promote a version again"
            ) from exc
        return Pointer(data["version"], int(data["generation"]), data["promoted_at"])

    @contextlib.contextmanager
    def promotion_lock(self, model: str) -> Iterator[None]:
        """Serialises pointer moves and history edits of one model (a file lock locally; on S3 a
        PUT is atomic: see storage.lock)."""
        with storage.lock(self.root, f"{model}/.promote.lock"):
            yield

    def move_pointer(self, model: str, version: str) -> Pointer:
        """Point `model` at `version`, one generation on. The caller holds promotion_lock(model)
        and has verified the version; Serve replicas follow the new generation."""
        current = self.pointer(model)
        pointer = Pointer(
            version=version,
            generation=(current.generation + 1) if current else 1,
            promoted_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        payload = json.dumps(pointer.__dict__).encode()
        storage.replace_file(self.root, f"{model}/{POINTER_FILE}", payload)
        return pointer

    def promote(self, model: str, version: str) -> Pointer:
        """Point `model` at `version` (which must exist and verify), with no gate and no history:
        the bare move that test fixtures use. Users and sweeps go through
        raylife.lifecycle.promotion.promote (gated, audited)."""
        version = self.resolve(model, version)
        self.load(model, version)  # never promote a corrupt artifact
        with self.promotion_lock(model):
            return self.move_pointer(model, version)


def load_artifact_dir(folder: Path) -> Artifact:
    """An artifact from a local folder (a store version or a Ray Train checkpoint)."""
    try:
        return Artifact.from_files(
            (folder / META_FILE).read_bytes(),
            (folder / WEIGHTS_FILE).read_bytes(),
            where=str(folder),
        )
    except FileNotFoundError as exc:
        raise ArtifactError(f"{folder} is not a raylife artifact ({exc.filename} missing)") from exc
