"""The one owner of storage: a URI as a pyarrow filesystem and a path, listing, staged publish
with a completion marker, and the root cause under a framework's wrapped errors.

Every reader and writer of user-named locations (the model store, streaming ingest, batch
inference, request capture, table reading) opens them with `locate`, so they accept the same URIs:
    /a/path, a/relative/path, ~/path     the local filesystem
    file:///a/path                       the same, spelled as a URI
    s3://bucket/prefix?region=...        S3 (query: region, endpoint_override, scheme)
    any other scheme pyarrow opens        (gs://, hdfs://, ...), as pyarrow opens it

Listing skips hidden and `_` entries (a path with a part starting "." or "_" below the listed
folder): staging folders, markers, Spark's `_SUCCESS` and `_temporary/` are never data.

Visibility: a folder is published whole or not at all. Locally it is written into a hidden sibling
(`staging_of`) and renamed into place; on an object store, where there is no rename, the files go
first and the COMPLETE_MARKER last: a folder without the marker is not there.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import glob as globlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pyarrow import fs as pafs

from raylife import errors
from raylife.errors import RaylifeError

COMPLETE_MARKER = "_COMPLETE"
"""Written last into a published folder: a folder without it is unfinished, never read."""


# --------------------------------------------------------------------------------------------------
# Locations


@dataclass(frozen=True)
class Location:
    """A place on a pyarrow filesystem: what `locate` makes of a URI."""

    fs: Any
    """A pyarrow FileSystem (LocalFileSystem, S3FileSystem, ...)."""
    path: str
    """The filesystem's path: absolute locally, `bucket/prefix` on S3; no trailing slash."""
    uri: str
    """For messages: the user's spelling without its query string (locally: the absolute path)."""

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def at(self, rel: str = "") -> str:
        """The filesystem path of `rel` below this location."""
        return f"{self.path.rstrip('/')}/{rel}" if rel else self.path

    def joined(self, rel: str) -> Location:
        """The location of `rel` below this one."""
        return self.child(self.at(rel))

    def child(self, path: str) -> Location:
        """Another place on the same filesystem (`path` is a filesystem path)."""
        return Location(self.fs, path, self.uri_of(path))

    def uri_of(self, path: str) -> str:
        """A filesystem path of this location's filesystem as the user would write it."""
        if self.is_local:
            return path
        return f"{self.uri.split('://', 1)[0]}://{path}"

    def info(self, path: str | None = None) -> Any:
        return self.fs.get_file_info(path or self.path)


def is_local_uri(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def locate(uri: str, what: str = "location") -> Location:
    """The filesystem and path of a local path, a file:// or an s3:// URI (or any scheme pyarrow
    opens). `what` names the location in the error a bad URI raises ("model store", "data")."""
    if is_local_uri(uri):
        path = os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
        return Location(pafs.LocalFileSystem(), path, path)
    shown = uri.split("?")[0].rstrip("/")
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for bad URIs and credentials
        raise RaylifeError(
            f"cannot open {what} {shown}: {exc}; check the URI and credentials"
        ) from exc
    if uri.startswith("s3://"):
        filesystem = _with_env_keys(filesystem, uri)
    return Location(filesystem, path.rstrip("/") or path, shown)


def _with_env_keys(filesystem: Any, uri: str) -> Any:
    """The S3 filesystem with the process's static AWS keys, if it has some (and the URI names
    none): Ray Data pickles the filesystem into its tasks, whose processes may not have them (a
    pod's IRSA role needs none)."""
    parts = urlsplit(uri)
    if not os.environ.get("AWS_ACCESS_KEY_ID") or parts.username:
        return filesystem
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return pafs.S3FileSystem(
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        session_token=os.environ.get("AWS_SESSION_TOKEN"),
        region=filesystem.region,
        endpoint_override=query.get("endpoint_override"),
        scheme=query.get("scheme", "https"),
    )


# --------------------------------------------------------------------------------------------------
# Reading and listing


def read_bytes(loc: Location, rel: str = "") -> bytes:
    """A file's bytes. FileNotFoundError when it does not exist (locally also IsADirectoryError
    and PermissionError, as the OS says them)."""
    path = loc.at(rel)
    if loc.is_local:
        return Path(path).read_bytes()
    try:
        with loc.fs.open_input_stream(path) as handle:
            return bytes(handle.read())
    except FileNotFoundError:
        raise
    except OSError as exc:
        text = str(exc).lower()
        if "not found" in text or "does not exist" in text:
            raise FileNotFoundError(path) from exc
        raise


def exists(loc: Location, rel: str = "") -> bool:
    return bool(loc.info(loc.at(rel)).type != pafs.FileType.NotFound)


def visible(relative: str) -> bool:
    """Whether a path below a listed folder is data: no part of it starts with "." or "_"."""
    return not any(part.startswith((".", "_")) for part in PurePosixPath(relative).parts)


def list_dirs(loc: Location, rel: str = "") -> list[str]:
    """The visible folders directly in `rel`, by name; [] when it is missing or not a folder."""
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.at(rel), allow_not_found=True))
    except NotADirectoryError:
        return []
    names = (PurePosixPath(i.path).name for i in infos if i.type == pafs.FileType.Directory)
    return sorted(name for name in names if visible(name))


def list_files(loc: Location, folder: str | None = None) -> list[tuple[str, int]]:
    """(path, size) of the visible files below `folder` (a filesystem path; default the
    location's), recursively, in name order; [] when it is missing."""
    folder = folder or loc.path
    infos = loc.fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    return sorted(
        (i.path, i.size or 0)
        for i in infos
        if i.type == pafs.FileType.File and visible(i.path[len(folder) :])
    )


def is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def find_files(loc: Location) -> list[tuple[str, int]] | None:
    """(path, size) of the files a location names: itself (a file, even a hidden one), the
    visible files below it (a folder) or matching it (a glob), in name order. None: a path that
    is not a glob and does not exist."""
    if is_glob(loc.path):
        return _glob(loc)
    info = loc.info()
    if info.type == pafs.FileType.NotFound:
        return None
    if info.type == pafs.FileType.File:
        return [(info.path, info.size or 0)]
    return list_files(loc)


def _glob(loc: Location) -> list[tuple[str, int]]:
    pattern = loc.path
    root = os.path.dirname(pattern.split("*")[0].split("?")[0].split("[")[0])
    infos = loc.fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    found = [
        (i.path, i.size or 0)
        for i in infos
        if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, pattern)
    ]
    if not found and loc.is_local:  # fnmatch's `*` spans folders; glob's rules may find more
        found = [(p, os.path.getsize(p)) for p in globlib.glob(pattern) if os.path.isfile(p)]
    return sorted((p, s) for p, s in found if visible(p[len(root) :]))


# --------------------------------------------------------------------------------------------------
# Writing: single files, and folders published with the marker last


def write_bytes(loc: Location, rel: str, payload: bytes) -> None:
    """Write one file (locally flushed to disk before this returns; its folders are created,
    as S3 has none to create)."""
    if loc.is_local:
        path = Path(loc.at(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(path, payload)
        return
    with loc.fs.open_output_stream(loc.at(rel)) as handle:
        handle.write(payload)


def _write_synced(path: Path, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def replace_file(loc: Location, rel: str, payload: bytes) -> None:
    """Atomically replace one small file: locally a hidden temp file renamed over it
    (os.replace); on S3 one PUT, which is atomic."""
    if not loc.is_local:
        write_bytes(loc, rel, payload)
        return
    target = Path(loc.at(rel))
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
    _write_synced(temp, payload)
    os.replace(temp, target)


@contextlib.contextmanager
def lock(loc: Location, rel: str) -> Iterator[None]:
    """An exclusive file lock locally (between processes too); a no-op on an object store,
    whose writers rely on a PUT being atomic."""
    if not loc.is_local:
        yield
        return
    path = Path(loc.at(rel))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def staging_of(final: Location) -> Location:
    """A hidden sibling of `final` to write into before `publish`: never under `final` itself,
    so a complete `final` stays complete meanwhile."""
    if "/" not in final.path.strip("/"):
        raise RaylifeError(
            f"{final.uri} is a bucket or the root; pass a folder in it (s3://bucket/name)"
        )
    parent, name = final.path.rsplit("/", 1)
    return final.child(f"{parent}/.staging-{name}-{uuid.uuid4().hex[:8]}")


def publish(staging: Location, final: Location, marker: bytes = b"", replace: bool = False) -> None:
    """Make the files of `staging` the folder `final`, the COMPLETE_MARKER (holding `marker`) last.

    Locally the marker goes into `staging`, which is renamed into place: `final` is missing,
    never half, meanwhile; without `replace` the rename fails when `final` is a non-empty folder.
    On an object store the files are copied under `final` and the marker written after them;
    with `replace` the old marker goes first, then the old files (the caller checks that a
    `final` it must not replace is absent)."""
    if final.is_local:
        write_bytes(staging, COMPLETE_MARKER, marker)
        old = final.child(f"{staging.path}.old")
        moved = replace and exists(final)
        if moved:
            os.rename(final.path, old.path)
        os.rename(staging.path, final.path)  # atomic on one filesystem
        if moved:
            remove(old)
        return
    if replace:
        if exists(final, COMPLETE_MARKER):  # stop looking complete before anything else changes
            final.fs.delete_file(final.at(COMPLETE_MARKER))
        final.fs.delete_dir_contents(final.path, missing_dir_ok=True)
    for path, _ in list_files(staging):
        final.fs.copy_file(path, final.path + path[len(staging.path) :])
    write_bytes(final, COMPLETE_MARKER, marker)
    remove(staging)


def write_folder(final: Location, files: Mapping[str, bytes], marker: bytes = b"") -> None:
    """Publish `files` as the new folder `final`, complete or not at all. Locally they are staged
    and renamed (an OSError when `final` exists); on an object store, where nothing is there to
    replace, they are written in place with the marker last, with no copy."""
    if not final.is_local:
        for name, payload in files.items():
            write_bytes(final, name, payload)
        write_bytes(final, COMPLETE_MARKER, marker)
        return
    staging = staging_of(final)
    os.makedirs(staging.path)
    try:
        for name, payload in files.items():
            write_bytes(staging, name, payload)
        publish(staging, final, marker)
    except BaseException:
        remove(staging)
        raise


def read_marker(loc: Location) -> bytes | None:
    """The COMPLETE_MARKER's contents of a published folder; None: not complete (or absent)."""
    try:
        return read_bytes(loc, COMPLETE_MARKER)
    except OSError:
        return None


def remove(loc: Location) -> None:
    """Delete a folder and everything below it, if it is there."""
    if loc.is_local:
        shutil.rmtree(loc.path, ignore_errors=True)
    elif exists(loc):
        loc.fs.delete_dir(loc.path)


# --------------------------------------------------------------------------------------------------
# Errors that crossed a framework: the cause a user can act on


def _causes(exc: BaseException, implicit: bool = False) -> Iterator[BaseException]:
    """exc, then what caused it, down the chain, never looping: `raise ... from` causes, and
    with `implicit` also Ray's `.cause` (a task error's original) and exceptions being handled."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        cause = getattr(current, "cause", None) if implicit else None
        if not isinstance(cause, BaseException):
            cause = current.__cause__ or (current.__context__ if implicit else None)
        current = cause


def root_cause(exc: BaseException) -> str:
    """The last line of the innermost `raise ... from` cause: the one-line reason under Ray's
    wrappers (its tracebacks end with the original error's line)."""
    *_, innermost = _causes(exc)
    lines = str(innermost).strip().splitlines()
    return lines[-1] if lines else type(innermost).__name__


_REMOTE_ERROR = re.compile(r"raylife\.errors\.(\w+): ([^\n]+)")


def user_error(exc: BaseException) -> RaylifeError | None:
    """The RaylifeError under Ray's wrappers (one line for the CLI), or None for a crash."""
    for current in _causes(exc, implicit=True):
        if isinstance(current, RaylifeError):
            return current
    # Ray Data re-raises an actor's error as RayTaskError(UserCodeException) without the original
    # in its chain (it crossed a process); its text keeps the original's "module.Class: message".
    found = _REMOTE_ERROR.search(str(exc))
    if found is None:
        return None
    kind = getattr(errors, found.group(1), RaylifeError)
    is_error = isinstance(kind, type) and issubclass(kind, RaylifeError)
    return kind(found.group(2)) if is_error else RaylifeError(found.group(2))
