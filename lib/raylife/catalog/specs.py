"""ModelSpec: a model's declaration (raylife.catalog.declaration) in the form the code uses.

Every model, the four tutorial ones included, is a declaration file; raylife.catalog.lookup finds
them and builds these. The same name is used everywhere: `--model iris`, `ray-job.train-iris.yaml`,
route `/iris`, store path `<store>/iris/<version>/`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from raylife.catalog.declaration import (
    ChoiceDecl,
    DataDecl,
    Declaration,
    LogUniformDecl,
    MonitorDecl,
    ServeDecl,
    Source,
    hyperparams,
)
from raylife.config import DataConfig, Hyperparams
from raylife.data.contracts import InputKind
from raylife.errors import RaylifeError

if TYPE_CHECKING:  # raylife.tasks imports torch: a Serve app's build task needs only the names
    from raylife.tasks import Task, TaskName


@dataclass(frozen=True)
class LogUniform:
    """Search dimension sampled log-uniformly in [low, high]."""

    low: float
    high: float


@dataclass(frozen=True)
class Choice:
    """Search dimension sampled from a fixed set of options."""

    options: tuple[Any, ...]


SearchDim = LogUniform | Choice


@dataclass(frozen=True)
class Baseline:
    """The tutorial's figures for this model (see the shared TUTORIAL_REFERENCE)."""

    metric: Literal["accuracy", "rmse"]
    reported: float
    """What the tutorial reports (one unseeded split; MNIST on the full 60k/10k data)."""
    same_data: float
    """The tutorial's code as written, on raylife's embedded data: mean test score over 5 seeds.
    The fair yardstick: same rows, same kind of split."""


@dataclass(frozen=True)
class PromotionGate:
    """How much worse than the champion a candidate may score on the same test split and still be
    promoted: `absolute + relative * |champion|`, in the primary metric's units, on the worse side
    of its direction. Both zero: any drop is refused."""

    absolute: float = 0.0
    """Allowed drop in metric units (accuracy: a share of test rows; rmse: target units)."""
    relative: float = 0.0
    """Allowed drop as a share of the champion's value (0.05 = 5 %)."""

    def __post_init__(self) -> None:
        if not (self.absolute >= 0 and 0 <= self.relative < 1):
            raise RaylifeError(
                f"promotion gate tolerances must be >= 0 (relative < 1), got {self}; fix the model's declaration"
            )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    task_name: TaskName
    architecture: str
    """"mlp", "cnn" (raylife.catalog.architectures) or a user factory "package.module:function"."""
    input_kind: InputKind
    data: DataDecl
    """The declared data: an embedded dataset, or a table/image URI with its target column."""
    declared_defaults: Hyperparams | None
    """The declaration's [hyperparameters]; None: the recipe for its table (`defaults`)."""
    declared_debug: Hyperparams | None
    declared_search: dict[str, SearchDim] | None
    declared_gate: PromotionGate | None
    serve: ServeDecl
    """The model's Serve application: replicas, autoscaling, batching, request limits."""
    monitor: MonitorDecl = dataclasses.field(default_factory=MonitorDecl)
    """How `raylife monitor` judges its live traffic: window size and drift thresholds."""
    tutorial: Baseline | None = None
    """The tutorial's figures (the four tutorial models only)."""
    source: Source | None = None
    """The declaration file (recorded in every artifact of this model)."""

    @property
    def task(self) -> TaskName:
        return self.task_name

    @property
    def task_obj(self) -> Task:
        # lazy: imports torch, needed only on this path
        from raylife.tasks import TASKS

        return TASKS[self.task_name]

    @property
    def is_factory(self) -> bool:
        return ":" in self.architecture

    @functools.cached_property
    def _recipe(self) -> dict[str, Any]:
        """A declaration that leaves hyperparameters, search or gate out gets them from the recipe
        for its table (raylife.catalog.recipe), sized once, when first asked for."""
        # lazy: reading the table's shape imports the data readers; most specs never need it
        from raylife.catalog import recipe

        if self.input_kind != "tabular":
            raise RaylifeError(
                f"{self.source.path if self.source else self.name}: [hyperparameters] missing; "
                "the recipe is for tables: declare the hyperparameters of an image model"
            )
        rows, features = recipe.table_shape(self)
        plan = recipe.for_table(rows, features, self.task)
        where = f"{self.name}: the recipe"
        defaults = hyperparams(plan.hyperparameters, where)
        return {
            "defaults": defaults,
            "debug": hyperparams(plan.debug, where),
            "search": search_space(plan.search, defaults, where),
            "gate": PromotionGate(**plan.gate),
        }

    @property
    def defaults(self) -> Hyperparams:
        """The declaration's [hyperparameters]: what `raylife train` and `make quality` use."""
        return self.declared_defaults or self._recipe["defaults"]

    @property
    def debug(self) -> Hyperparams:
        """Tiny preset for fast tests (`--preset debug`)."""
        if self.declared_debug is not None:
            return self.declared_debug
        if self.declared_defaults is not None:
            return self.declared_defaults.replace(epochs=min(2, self.declared_defaults.epochs))
        return self._recipe["debug"]

    @property
    def search_space(self) -> dict[str, SearchDim]:
        """What `raylife tune` searches; other fields keep the defaults (epochs = the budget)."""
        if self.declared_search is not None:
            return self.declared_search
        return self._recipe["search"]

    @property
    def gate(self) -> PromotionGate:
        """How much worse than the champion a candidate may be (raylife promote, sweeps)."""
        return self.declared_gate or self._recipe["gate"]

    def preset(self, name: str) -> Hyperparams:
        presets = {"default": self.defaults, "debug": self.debug}
        if name not in presets:
            raise RaylifeError(f"unknown preset {name!r}; choose one of: {', '.join(presets)}")
        return presets[name]

    def data_config(self, cfg: DataConfig) -> DataConfig:
        """`cfg` with the declared data filled in: `source="embedded"` (the default) means the
        model's own declared data, which for a declared table is its URI and target column."""
        if cfg.source == "embedded" and self.data.uri is not None:
            return dataclasses.replace(
                cfg, source=self.data.uri, target=cfg.target or self.data.target
            )
        return cfg

    def model_args(self, hp: Hyperparams, input_shape: list[int], n_outputs: int) -> dict[str, Any]:
        """Constructor arguments of the architecture; stored in artifacts. A factory gets the
        hyperparameters, the input shape and the output count (raylife.catalog.architectures)."""
        if self.is_factory:
            return {
                "hyperparameters": hp.to_dict(),
                "input_shape": list(input_shape),
                "n_outputs": n_outputs,
            }
        if self.architecture == "cnn":
            return {
                "in_channels": input_shape[0],
                "image_size": input_shape[-1],
                "out_features": n_outputs,
                "conv_channels": list(hp.conv_channels),
                "hidden_sizes": list(hp.hidden_sizes),
                "dropout": hp.dropout,
            }
        return {
            "in_features": input_shape[0],
            "out_features": n_outputs,
            "hidden_sizes": list(hp.hidden_sizes),
            "activation": hp.activation,
            "dropout": hp.dropout,
        }


def from_declaration(declaration: Declaration, source: Source | None = None) -> ModelSpec:
    """The spec of a validated declaration; search choices are checked against the
    hyperparameters' own rules, so a bad option fails here and not in trial 37. What the
    declaration leaves out of [hyperparameters], [search] and [gate] comes from the recipe."""
    where = source.path if source else declaration.name
    defaults = (
        hyperparams(declaration.hyperparameters, f"{where}: [hyperparameters]")
        if declaration.hyperparameters is not None
        else None
    )
    debug = (
        hyperparams(declaration.debug, f"{where}: [debug]")
        if declaration.debug is not None
        else None
    )
    space = (
        search_space(declaration.search, defaults, where)
        if defaults is not None  # declared without [search]: nothing sampled, the defaults run
        else None
    )
    if declaration.search and defaults is None:
        raise RaylifeError(
            f"{where}: [search] without [hyperparameters]; declare both, or neither (the recipe)"
        )
    gate = declaration.gate
    declared_gate = PromotionGate(gate.absolute, gate.relative) if gate.model_fields_set else None
    data = declaration.data
    if data.uri is not None and source is not None and _is_relative_path(data.uri):
        # A relative path in a declaration is relative to its file, wherever raylife runs from.
        data = data.model_copy(update={"uri": str((Path(source.path).parent / data.uri).resolve())})
    image = (
        declaration.architecture.kind == "cnn"
        or declaration.data.embedded == "mnist"
        or (declaration.data.uri is not None and declaration.data.kind == "images")
    )
    tutorial = declaration.tutorial
    return ModelSpec(
        name=declaration.name,
        description=declaration.description,
        task_name=declaration.task,
        architecture=declaration.architecture.kind,
        input_kind="image" if image else "tabular",
        data=data,
        declared_defaults=defaults,
        declared_debug=debug,
        declared_search=space,
        declared_gate=declared_gate,
        serve=declaration.serve,
        monitor=declaration.monitor,
        tutorial=Baseline(tutorial.metric, tutorial.reported, tutorial.same_data)
        if tutorial
        else None,
        source=source,
    )


def search_space(
    declared: dict[str, Any], defaults: Hyperparams | None, where: str
) -> dict[str, SearchDim]:
    """Search dimensions from a declaration's [search] (or the recipe's), each option checked."""
    space: dict[str, SearchDim] = {}
    for field, raw in declared.items():
        dim = raw if isinstance(raw, LogUniformDecl | ChoiceDecl) else _dim(raw, where, field)
        options: tuple[Any, ...]
        if isinstance(dim, LogUniformDecl):
            space[field] = LogUniform(*dim.loguniform)
            options = dim.loguniform
        else:
            options = tuple(_tupled(o) for o in dim.choice)
            space[field] = Choice(options)
        for option in options:
            try:
                if defaults is not None:
                    defaults.replace(**{field: option})
            except RaylifeError as exc:
                raise RaylifeError(f"{where}: search.{field}: option {option!r}: {exc}") from None
    return space


def _dim(raw: Any, where: str, field: str) -> LogUniformDecl | ChoiceDecl:
    try:
        if "loguniform" in raw:
            return LogUniformDecl.model_validate(raw)
        return ChoiceDecl.model_validate(raw)
    except (TypeError, ValueError) as exc:
        raise RaylifeError(f"{where}: search.{field}: {exc}") from None


def _is_relative_path(uri: str) -> bool:
    return "://" not in uri and not Path(uri).is_absolute()


def _tupled(value: Any) -> Any:
    """TOML lists are Python lists; Hyperparams' sizes are tuples."""
    return tuple(value) if isinstance(value, list) else value
