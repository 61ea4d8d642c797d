"""A user's model factory (`architecture.kind = "package.module:function"`): find it, call it,
record it, and carry it to processes that cannot see the user's folder.

Where the code comes from, per process:
- the driver (the CLI, a RayJob's entrypoint): the models folder is put on sys.path, so a
  `churn.py` beside `churn.toml` is importable as `churn`; an installed package works as usual;
- Ray Train workers and Tune trials: the driver's run config carries the module's source (one
  file) and they write it under a cache folder keyed by its sha256 (`materialize`); a factory that
  imports more of its own package must be installed on the cluster (an image layer built on the
  raylife image, or Ray's runtime_env `py_modules`/`working_dir`: docs/catalogue.md);
- Serve replicas, batch actors and `raylife predict`: import it like the driver (the models
  folder travels in the app's runtime_env locally; on EKS the image layer or the runtime_env),
  and refuse a module whose sha256 differs from the one the artifact recorded unless told to
  (ALLOW_CHANGED_CODE_ENV=1); where the module is not installed at all, the copy the artifact
  recorded is used (the store is trusted with what it serves, as it is with the weights).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylife.catalog.lookup import models_dir
from raylife.errors import ArtifactError, RaylifeError

ALLOW_CHANGED_CODE_ENV = "RAYLIFE_ALLOW_CHANGED_CODE"
"""Set to 1 to let a replica load a version whose factory module changed since it was trained."""
CACHE_ENV = "RAYLIFE_CODE_CACHE"


def _models_dir_on_path() -> None:
    folder = models_dir()
    if folder is not None and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def split(factory: str) -> tuple[str, str]:
    module, _, function = factory.partition(":")
    return module, function


def load_factory(factory: str, where: str = "architecture.kind") -> Callable[..., Any]:
    """The factory function; an import error or a missing name is one line naming the fix."""
    _models_dir_on_path()
    module_name, function = split(factory)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a user's module can raise anything while importing
        raise RaylifeError(
            f"{where} {factory!r}: cannot import {module_name} ({type(exc).__name__}: {exc}); put "
            f"{module_name.replace('.', '/')}.py in the models folder or install its package"
        ) from None
    built = getattr(module, function, None)
    if not callable(built):
        raise RaylifeError(
            f"{where} {factory!r}: {module_name} has no function {function}; "
            f"define def {function}(hyperparameters, input_shape, n_outputs) -> nn.Module"
        )
    return built


def module_file(factory: str) -> Path:
    _models_dir_on_path()
    module_name, _ = split(factory)
    found = importlib.util.find_spec(module_name)
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise RaylifeError(f"factory {factory!r}: module {module_name} has no .py source file")
    return Path(found.origin)


def record(factory: str) -> dict[str, Any]:
    """What an artifact keeps of the code: module, file, sha256, source, git commit (if any)."""
    path = module_file(factory)
    source = path.read_bytes()
    return {
        "factory": factory,
        "module": split(factory)[0],
        "file": str(path),
        "sha256": hashlib.sha256(source).hexdigest(),
        "source": source.decode("utf-8"),
        "git_commit": _git_commit(path.parent),
    }


def _git_commit(folder: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def materialize(carried: dict[str, Any] | None) -> None:
    """Make a carried module importable in this process (a worker without the models folder)."""
    if carried is None:
        return
    module_name = carried["module"]
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        found = None
    if found is not None and found.origin and _sha256(Path(found.origin)) == carried["sha256"]:
        return
    root = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "raylife-code")
    folder = root / carried["sha256"]
    target = folder.joinpath(*module_name.split(".")).with_suffix(".py")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        for package in target.relative_to(folder).parents:
            if str(package) != ".":
                (folder / package / "__init__.py").touch()
        staged = target.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(carried["source"])
        staged.replace(target)  # atomic: workers of one node may race here
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    sys.modules.pop(module_name, None)
    importlib.invalidate_caches()


def ensure(carried: dict[str, Any], where: str) -> None:
    """Before a stored version is built (Serve replica, batch actor, `raylife predict`): its
    factory module as installed here must be the one it was trained with (else refused, unless
    ALLOW_CHANGED_CODE_ENV=1); where it is not installed, the artifact's own copy is used."""
    _models_dir_on_path()
    try:
        found = importlib.util.find_spec(carried["module"])
    except (ImportError, ValueError):
        found = None
    if found is None or not found.origin:
        materialize(carried)
        return
    now = _sha256(Path(found.origin))
    if now != carried["sha256"] and os.environ.get(ALLOW_CHANGED_CODE_ENV) != "1":
        raise ArtifactError(
            f"{where}: the factory module {found.origin} changed since this version was trained "
            f"(sha256 {now[:12]}... now, {carried['sha256'][:12]}... recorded); restore it (git "
            f"commit {carried.get('git_commit') or 'unknown'}), retrain, or set "
            f"{ALLOW_CHANGED_CODE_ENV}=1"
        )


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
