"""A model declaration: one TOML file that says everything raylife needs to know about one model.

Why TOML: it is in the standard library (`tomllib`, nothing to install in a replica), it has
comments (a declaration explains its numbers, as the tutorial models' do), typed numbers and lists
(`hidden_sizes = [64, 32]` is not a string to parse), and no code runs when it is read (YAML's tags
and Python files would). The schema below is strict: an unknown or misspelt field, a wrong type or
an impossible value is refused with one line naming the file, the field and the fix.

    name = "churn"                       # the key of every verb: --model churn, route /churn
    description = "..."
    task = "binary"                      # binary | multiclass | regression

    [data]                               # exactly one of embedded / uri
    uri = "s3://bucket/churn.parquet"    # a CSV/Parquet file, folder or glob, or a PNG class folder
    target = "churned"                   # tables: the column to predict
    id_column = "customer_id"            # tables, optional: kept out of the features

    [architecture]
    kind = "mlp"                         # mlp | cnn | "package.module:factory"

    [hyperparameters] / [debug]          # config.Hyperparams fields (debug: the tiny test preset)
    [search]                             # lr = { loguniform = [1e-4, 1e-2] }, x = { choice = [...] }
    [gate]                               # absolute / relative tolerance of the promotion gate
    [serve]                              # replicas, batching, request limits of the model's app
    [monitor]                            # drift windows and thresholds of `raylife monitor`
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raylife.config import Hyperparams
from raylife.errors import RaylifeError

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"
"""A model's name is a route, a store folder, a Kubernetes object name part and an MLflow name."""
FACTORY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
BUILT_IN_ARCHITECTURES = ("mlp", "cnn")
EMBEDDED_DATASETS = ("ionosphere", "iris", "boston", "mnist", "wine", "breast_cancer", "diabetes")
"""Tables and images that ship inside the installed packages (raylife.data.sources)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataDecl(_Strict):
    embedded: Literal[EMBEDDED_DATASETS] | None = None  # type: ignore[valid-type]
    uri: str | None = Field(default=None, min_length=1)
    target: str | None = Field(default=None, min_length=1)
    id_column: str | None = Field(default=None, min_length=1)
    kind: Literal["table", "images"] = "table"
    """uri data: a table (CSV/Parquet) or a folder of PNG class folders."""

    @model_validator(mode="after")
    def _one_source(self) -> DataDecl:
        if (self.embedded is None) == (self.uri is None):
            raise ValueError("give exactly one of embedded = NAME or uri = TABLE_OR_FOLDER")
        if self.embedded is not None and (self.target or self.id_column):
            raise ValueError("target and id_column are for uri tables; embedded data names its own")
        if self.uri is not None and self.kind == "table" and not self.target:
            raise ValueError("a table needs its target column: add target = COLUMN")
        return self


class ArchitectureDecl(_Strict):
    kind: str = Field(description="mlp | cnn | package.module:factory")

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in BUILT_IN_ARCHITECTURES and not re.match(FACTORY_PATTERN, kind):
            raise ValueError(
                f"{kind!r} is neither a built-in architecture ({', '.join(BUILT_IN_ARCHITECTURES)}) "
                "nor a factory written package.module:function"
            )
        return kind


class LogUniformDecl(_Strict):
    loguniform: tuple[float, float]

    @field_validator("loguniform")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        low, high = bounds
        if not 0 < low <= high:
            raise ValueError(f"loguniform needs 0 < low <= high, got [{low}, {high}]")
        return bounds


class ChoiceDecl(_Strict):
    choice: list[Any] = Field(min_length=1)


class GateDecl(_Strict):
    absolute: float = Field(default=0.0, ge=0)
    relative: float = Field(default=0.0, ge=0, lt=1)


class MonitorDecl(_Strict):
    """How `raylife monitor` judges this model's live traffic (raylife.monitoring.drift)."""

    window_requests: int = Field(default=500, ge=20)
    """Captured requests per window."""
    alpha: float = Field(default=0.01, gt=0, lt=1)
    """False-alarm rate of one window, over all its tests together (Bonferroni)."""
    psi: float = Field(default=0.1, ge=0)
    """Smallest population stability index that counts as drift, however significant."""
    min_rows: int = Field(default=100, ge=10)
    """A window with fewer captured rows is not tested."""


class ServeDecl(_Strict):
    """The model's Serve settings; a field left out keeps the environment's (serve_apps/config)."""

    mode: Literal["pool", "dedicated"] = "pool"
    """pool: served by the shared model pool (loaded on first use, evicted beyond its budget);
    dedicated: an application of its own (for GPUs, batching or a hot path), sized below."""
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    target_ongoing_requests: float | None = Field(default=None, gt=0)
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    batching: bool | None = None
    max_batch_size: int | None = Field(default=None, ge=1)
    batch_wait_timeout_s: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ServeDecl:
        own = [f for f in self.model_fields_set if f != "mode"]
        if self.mode == "pool" and own:
            raise ValueError(
                f"{', '.join(sorted(own))} size a model's own application; a pooled model shares "
                'the pool\'s: add mode = "dedicated" (or remove them)'
            )
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and low > high:
            raise ValueError(
                f"min_replicas {low} > max_replicas {high}; raise max_replicas or lower min_replicas"
            )
        return self

    def deployment(self) -> dict[str, Any]:
        """These settings as a Serve deployment's fields (merged over the environment's)."""
        autoscaling = _given(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            target_ongoing_requests=self.target_ongoing_requests,
        )
        batching = _given(
            enabled=self.batching,
            max_batch_size=self.max_batch_size,
            wait_timeout_s=self.batch_wait_timeout_s,
        )
        out: dict[str, Any] = {}
        if autoscaling:
            out["autoscaling_config"] = autoscaling
        if self.max_ongoing_requests is not None:
            out["max_ongoing_requests"] = self.max_ongoing_requests
        if batching:
            out["user_config"] = {"batching": batching}
        return out


def _given(**fields: Any) -> dict[str, Any]:
    """The fields a declaration set (None: left to the environment)."""
    return {k: v for k, v in fields.items() if v is not None}


class TutorialDecl(_Strict):
    metric: Literal["accuracy", "rmse"]
    reported: float
    same_data: float


class Declaration(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1)
    task: Literal["binary", "multiclass", "regression"]
    data: DataDecl
    architecture: ArchitectureDecl
    hyperparameters: dict[str, Any] | None = None
    debug: dict[str, Any] | None = None
    search: dict[str, LogUniformDecl | ChoiceDecl] = Field(default_factory=dict)
    gate: GateDecl = Field(default_factory=GateDecl)
    serve: ServeDecl = Field(default_factory=ServeDecl)
    monitor: MonitorDecl = Field(default_factory=MonitorDecl)
    tutorial: TutorialDecl | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Declaration:
        if self.architecture.kind == "cnn" and self.data.embedded not in (None, "mnist"):
            raise ValueError("architecture cnn takes images; use mlp for a table")
        searchable = {f.name for f in dataclasses.fields(Hyperparams)}
        unknown = sorted(set(self.search) - searchable)
        if unknown:
            raise ValueError(
                f"search names unknown hyperparameter(s) {unknown}; searchable: {sorted(searchable)}"
            )
        return self


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a declaration came from: what an artifact records so a version can be rebuilt."""

    path: str
    text: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256, "text": self.text}


def read(path: Path) -> tuple[Declaration, Source]:
    """Parse and validate one declaration file; every problem is one RaylifeError line."""
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise RaylifeError(f"{path}: cannot read the declaration ({exc.strerror})") from None
    try:
        text = raw_bytes.decode("utf-8")
        document = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RaylifeError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    try:
        declaration = Declaration.model_validate(document)
    except ValidationError as exc:
        raise RaylifeError(f"{path}: {_first_problem(exc)}") from None
    if path.stem != declaration.name:
        raise RaylifeError(
            f"{path}: name {declaration.name!r} differs from the file's name; "
            f"rename the file to {declaration.name}.toml or set name = {path.stem!r}"
        )
    for table in ("hyperparameters", "debug"):
        values = getattr(declaration, table)
        if values is not None:
            hyperparams(values, f"{path}: [{table}]")
    digest = hashlib.sha256(raw_bytes).hexdigest()
    return declaration, Source(str(path), text, digest)


def hyperparams(values: dict[str, Any], where: str) -> Hyperparams:
    """A Hyperparams from a declaration's table; an unknown field or a bad value names both."""
    known = {f.name for f in dataclasses.fields(Hyperparams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RaylifeError(
            f"{where}: unknown field(s) {unknown}; known: {', '.join(sorted(known))}"
        )
    missing = [
        f.name
        for f in dataclasses.fields(Hyperparams)
        if f.default is dataclasses.MISSING and f.name not in values
    ]
    if missing:
        raise RaylifeError(f"{where}: missing {', '.join(missing)}; add them to the table")
    try:
        return Hyperparams.from_dict(values)
    except (RaylifeError, TypeError, ValueError) as exc:
        raise RaylifeError(f"{where}: {exc}") from None


def _first_problem(exc: ValidationError) -> str:
    """pydantic's first error as `field: problem; the fix`."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "the file"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field; remove it or fix its spelling (see docs/catalogue.md)"
    if error["type"] == "missing":
        return f"{where}: missing; add it (see docs/catalogue.md)"
    if error["type"] == "string_pattern_mismatch" and error["loc"] == ("name",):
        return (
            f"name {error['input']!r}: use lowercase letters, digits, - and _ "
            "(at most 40, starting with a letter)"
        )
    return f"{where}: {message}"
