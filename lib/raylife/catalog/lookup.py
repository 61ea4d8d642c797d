"""Which models exist: the declarations shipped in the package, plus the user's models folder.

The folder is `$RAYLIFE_MODELS` (the CLI's `--models-dir` sets it), else `./models` when there is
one. Each `NAME.toml` there is one model (raylife.catalog.declaration); a name that is already
taken, in the package or twice in the folder, is refused. Processes that cannot see the folder
(Ray workers on other nodes) get the declaration inside the run's config and `adopt` it.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from raylife.catalog import declaration
from raylife.catalog.specs import ModelSpec, from_declaration
from raylife.errors import RaylifeError

MODELS_ENV = "RAYLIFE_MODELS"
DEFAULT_DIR = Path("models")
PACKAGED_ORDER = ("ionosphere", "iris", "boston", "mnist")
"""The tutorial's order (binary, multiclass, regression, images): `raylife run all` goes this way."""

_adopted: dict[str, ModelSpec] = {}
_cache: dict[tuple[Any, ...], dict[str, ModelSpec]] = {}


def models_dir() -> Path | None:
    """The user's declarations folder, or None when there is none."""
    configured = os.environ.get(MODELS_ENV)
    if configured:
        folder = Path(configured).expanduser()
        if not folder.is_dir():
            raise RaylifeError(
                f"{MODELS_ENV}={configured} is not a folder; create it (raylife init writes "
                f"declarations there) or unset {MODELS_ENV}"
            )
        return folder.resolve()
    return DEFAULT_DIR.resolve() if DEFAULT_DIR.is_dir() else None


@contextlib.contextmanager
def use_models_dir(folder: Path | str) -> Iterator[Path]:
    """The declarations in `folder` are the user's models while the block runs (as --models-dir;
    processes started inside inherit it): for tools and notebooks that declare models on the fly."""
    before = os.environ.get(MODELS_ENV)
    os.environ[MODELS_ENV] = str(folder)
    try:
        yield Path(folder)
    finally:
        if before is None:
            os.environ.pop(MODELS_ENV, None)
        else:
            os.environ[MODELS_ENV] = before


def _packaged_files() -> list[Path]:
    folder = Path(str(resources.files("raylife.catalog").joinpath("models")))
    files = {p.stem: p for p in folder.glob("*.toml")}
    ordered = [files.pop(name) for name in PACKAGED_ORDER if name in files]
    return ordered + sorted(files.values())


def _user_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return sorted(p for p in folder.glob("*.toml") if not p.name.startswith((".", "_")))


def catalogue() -> dict[str, ModelSpec]:
    """Every declared model by name, packaged first (re-read when a file changes)."""
    files = _packaged_files() + _user_files(models_dir())
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    if key not in _cache:
        _cache.clear()
        _cache[key] = _load(files)
    return {**_cache[key], **{k: v for k, v in _adopted.items() if k not in _cache[key]}}


def _load(files: list[Path]) -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for path in files:
        parsed, source = declaration.read(path)
        if parsed.name in specs:
            other = specs[parsed.name].source
            raise RaylifeError(
                f"{path}: model name {parsed.name!r} is already declared by "
                f"{other.path if other else 'the package'}; choose another name"
            )
        specs[parsed.name] = from_declaration(parsed, source)
    return specs


def get_spec(name: str) -> ModelSpec:
    """The spec of a declared model; the error lists the declared names and how to add one."""
    specs = catalogue()
    if name not in specs:
        folder = models_dir()
        where = f"models folder {folder}" if folder else f"no ./models folder, {MODELS_ENV} unset"
        raise RaylifeError(
            f"unknown model {name!r}; choose one of: {', '.join(specs)}, or declare it with "
            f"`raylife init {name} --data URI --target COLUMN` ({where})"
        )
    return specs[name]


def model_names() -> list[str]:
    return list(catalogue())


def is_packaged(spec: ModelSpec) -> bool:
    """A model that ships inside raylife (every process can find it without help)."""
    return spec.source is None or Path(spec.source.path).parent == _packaged_files()[0].parent


def record(name: str) -> dict[str, Any] | None:
    """What a process without the models folder needs to know the model: None for a packaged one,
    else the declaration file (path, text, sha256). Carried in TrainConfig.declaration."""
    spec = get_spec(name)
    if is_packaged(spec) or spec.source is None:
        return None
    return spec.source.to_dict()


def adopt(carried: dict[str, Any] | None) -> None:
    """Know the model of a carried declaration (a Ray worker's side of `record`)."""
    if carried is None:
        return
    parsed = declaration.Declaration.model_validate(tomllib.loads(carried["text"]))
    source = declaration.Source(carried["path"], carried["text"], carried["sha256"])
    _adopted[parsed.name] = from_declaration(parsed, source)
