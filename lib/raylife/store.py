"""The model store: versions, their metrics, and which version serves (the promotion pointer).

Layout (local folder or s3://bucket/prefix):
    <store>/<model>/<version>/weights.pt     state_dict
    <store>/<model>/<version>/artifact.json  everything else (see artifact.py)
    <store>/<model>/<version>/_COMPLETE      written last: a version without it does not exist
    <store>/<model>/PROMOTED                 {"version": ..., "generation": n, "promoted_at": ...}
    <store>/<model>/HISTORY.jsonl            promotions, refusals, rollbacks (see history.py)

Visibility: locally a version is written into a hidden temp folder and renamed into place (atomic);
on S3, where there is no rename, the files go first and the _COMPLETE marker last. Promotions take a
file lock locally and replace the pointer atomically (os.replace); on S3 a PUT is atomic, so
concurrent promotions resolve to one of the requested versions, never to a torn pointer.
Per-model files beside the versions (the history) are replaced the same way, under the same lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raylife.artifact import META_FILE, WEIGHTS_FILE, Artifact
from raylife.errors import ArtifactError, RaylifeError

COMPLETE_MARKER = "_COMPLETE"
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


class _Backend:
    """Minimal file operations the store needs, over a local folder or pyarrow's S3 filesystem."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.is_local = "://" not in uri or uri.startswith("file://")
        if self.is_local:
            self.root = Path(uri.removeprefix("file://")).expanduser()
            if self.root.exists() and not self.root.is_dir():
                raise RaylifeError(
                    f"model store {uri!r} is a file, not a folder; pass a folder or "
                    "s3://bucket/prefix (--store or $RAYLIFE_STORE)"
                )
        else:
            from pyarrow import fs as pafs

            try:
                self.fs, self.prefix = pafs.FileSystem.from_uri(self.uri)
            except Exception as exc:
                raise RaylifeError(
                    f"cannot open model store {uri!r}: {exc}; check the URI and credentials"
                ) from exc

    def _remote(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"

    def read(self, rel: str) -> bytes:
        try:
            if self.is_local:
                return (self.root / rel).read_bytes()
            with self.fs.open_input_stream(self._remote(rel)) as handle:
                return handle.read()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise FileNotFoundError(rel) from exc
        except OSError as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                raise FileNotFoundError(rel) from exc
            raise

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return (self.root / rel).exists()
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self._remote(rel)).type != pafs.FileType.NotFound

    def list_dirs(self, rel: str) -> list[str]:
        if self.is_local:
            folder = self.root / rel
            return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self._remote(rel), allow_not_found=True))
        return sorted(Path(i.path).name for i in infos if i.type == pafs.FileType.Directory)

    def write_version(self, rel: str, files: dict[str, bytes]) -> None:
        """Make `rel` appear complete or not at all."""
        if self.is_local:
            final = self.root / rel
            staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
            staging.mkdir(parents=True)
            try:
                for name, payload in files.items():
                    _write_synced(staging / name, payload)
                _write_synced(staging / COMPLETE_MARKER, b"")
                os.rename(staging, final)  # atomic on one filesystem; fails if final exists
            except BaseException:
                _remove_tree(staging)
                raise
            return
        for name, payload in files.items():
            with self.fs.open_output_stream(self._remote(f"{rel}/{name}")) as handle:
                handle.write(payload)
        with self.fs.open_output_stream(self._remote(f"{rel}/{COMPLETE_MARKER}")) as handle:
            handle.write(b"")

    def replace_file(self, rel: str, payload: bytes) -> None:
        """Atomically replace one small file (the promotion pointer)."""
        if self.is_local:
            target = self.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
            _write_synced(temp, payload)
            os.replace(temp, target)
            return
        with self.fs.open_output_stream(self._remote(rel)) as handle:
            handle.write(payload)

    @contextlib.contextmanager
    def lock(self, rel: str) -> Iterator[None]:
        """Serialises promotions of one model on a local store (no-op on S3: PUT is atomic)."""
        if not self.is_local:
            yield
            return
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _write_synced(path: Path, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class ModelStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._backend = _Backend(uri)

    # ---- versions ----------------------------------------------------------------------------

    def register(self, artifact: Artifact) -> str:
        """Store a new version of artifact.model; returns its version id."""
        files = artifact.to_files()
        for _ in range(3):  # two registrations in the same microsecond: retry with a fresh id
            version = new_version_id()
            try:
                self._backend.write_version(f"{artifact.model}/{version}", files)
                return version
            except FileExistsError:
                continue
            except OSError as exc:
                if "exists" in str(exc) or "not empty" in str(exc).lower():
                    continue
                raise
        raise RaylifeError("could not allocate a unique version id; try again")

    def models(self) -> list[str]:
        return [name for name in self._backend.list_dirs("") if not name.startswith(".")]

    def versions(self, model: str) -> list[str]:
        """Complete versions, oldest first. Staging folders and unfinished uploads are invisible."""
        return [
            v
            for v in self._backend.list_dirs(model)
            if _VERSION_RE.match(v) and self._backend.exists(f"{model}/{v}/{COMPLETE_MARKER}")
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
            meta = self._backend.read(f"{where}/{META_FILE}")
            weights = self._backend.read(f"{where}/{WEIGHTS_FILE}")
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"{where}: file {exc} is missing; the version is corrupt, promote another"
            ) from exc
        return version, Artifact.from_files(meta, weights, where=where)

    def metadata(self, model: str, version: str) -> dict[str, Any]:
        """artifact.json of a version, without loading weights (for listings)."""
        try:
            meta: dict[str, Any] = json.loads(self._backend.read(f"{model}/{version}/{META_FILE}"))
            return meta
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{model}/{version}: unreadable {META_FILE} ({exc})") from exc

    # ---- per-model files (the history) -------------------------------------------------------

    def read_model_file(self, model: str, name: str) -> bytes | None:
        """A file beside the versions of `model`; None when it does not exist."""
        try:
            return self._backend.read(f"{model}/{name}")
        except FileNotFoundError:
            return None

    def replace_model_file(self, model: str, name: str, payload: bytes) -> None:
        """Atomically replace a file beside the versions (hold promotion_lock while editing it)."""
        self._backend.replace_file(f"{model}/{name}", payload)

    def location(self, model: str, name: str) -> str:
        """Where a per-model file lives, for messages (an s3:// URI loses its query string)."""
        return f"{self.uri.split('?')[0].rstrip('/')}/{model}/{name}"

    # ---- promotion ---------------------------------------------------------------------------

    def pointer(self, model: str) -> Pointer | None:
        try:
            data = json.loads(self._backend.read(f"{model}/{POINTER_FILE}"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ArtifactError(
                f"{model}/{POINTER_FILE} is corrupt ({exc}); promote a version again"
            ) from exc
        return Pointer(data["version"], int(data["generation"]), data["promoted_at"])

    @contextlib.contextmanager
    def promotion_lock(self, model: str) -> Iterator[None]:
        """Serialises pointer moves and history edits of one model (local stores; see _Backend)."""
        with self._backend.lock(f"{model}/.promote.lock"):
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
        self._backend.replace_file(f"{model}/{POINTER_FILE}", json.dumps(pointer.__dict__).encode())
        return pointer

    def promote(self, model: str, version: str) -> Pointer:
        """Point `model` at `version` (which must exist and verify), with no gate and no history:
        the bare move that test fixtures use. Users and sweeps go through
        raylife.promotion.promote (gated, audited)."""
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
