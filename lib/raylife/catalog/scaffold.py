"""`raylife init NAME --data URI --target COL`: a declaration written from a table.

It reads the table, infers the task from the target column (and says how it decided), proposes
a recipe scaled to the rows and features (raylife.catalog.recipe) and writes `NAME.toml` into the
models folder; with `module=True` also a `NAME.py` factory to edit. Nothing is written when the
table, the target or the name is wrong.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylife.catalog import declaration, recipe
from raylife.catalog.lookup import catalogue
from raylife.catalog.specs import from_declaration
from raylife.data.sources import read_table
from raylife.errors import RaylifeError

if TYPE_CHECKING:
    import pandas as pd

MAX_CLASSES = 20
"""A target with more distinct values than this (or with fractions) is a regression target."""
ID_NAMES = ("id", "row_id", "index")


@dataclass(frozen=True)
class Inferred:
    task: str
    reason: str
    n_classes: int
    id_column: str | None
    rows: int
    features: int


def infer(frame: pd.DataFrame, target: str, origin: str) -> Inferred:
    """The task the target column implies, and an id column if one is obviously there."""
    import pandas as pd

    if target not in frame.columns:
        raise RaylifeError(
            f"target column {target!r} not in {origin}; columns are: "
            f"{', '.join(map(str, frame.columns))}; pass --target COLUMN"
        )
    labels = frame[target].dropna()
    distinct = labels.nunique()
    numeric = pd.api.types.is_numeric_dtype(labels)
    fractional = numeric and not bool((labels == labels.round()).all())
    if distinct < 2:
        raise RaylifeError(f"target column {target!r} in {origin} has one value; nothing to learn")
    if numeric and (fractional or distinct > MAX_CLASSES):
        task, why = "regression", f"numeric with {distinct} distinct values"
    elif distinct == 2:
        task, why = "binary", f"2 distinct values ({', '.join(map(str, sorted(labels.unique())))})"
    elif distinct <= MAX_CLASSES:
        task, why = "multiclass", f"{distinct} distinct values"
    else:
        raise RaylifeError(
            f"target column {target!r} in {origin} has {distinct} distinct non-numeric values; "
            f"a classifier takes at most {MAX_CLASSES} classes here: encode it, or pass --task"
        )
    id_column = next(
        (
            str(c)
            for c in frame.columns
            if str(c).lower() in ID_NAMES
            and c != target
            and frame[c].is_unique
            and pd.api.types.is_integer_dtype(frame[c])
        ),
        None,
    )
    features = [c for c in frame.columns if c not in (target, id_column)]
    non_numeric = [str(c) for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise RaylifeError(
            f"non-numeric feature column(s) {non_numeric} in {origin}; encode them as numbers "
            "(one-hot or ordinal) and run init again"
        )
    return Inferred(
        task, why, distinct if task != "regression" else 0, id_column, len(frame), len(features)
    )


def write(
    name: str,
    uri: str,
    target: str,
    folder: Path,
    task: str | None = None,
    module: bool = False,
    force: bool = False,
) -> tuple[list[Path], list[str]]:
    """Write NAME.toml (and NAME.py with `module`); returns the files and what was inferred."""
    if not re.match(declaration.NAME_PATTERN, name):
        raise RaylifeError(
            f"model name {name!r}: use lowercase letters, digits, - and _ (at most 40, "
            "starting with a letter); it becomes a route, a folder and a Kubernetes name"
        )
    taken = catalogue()
    if name in taken and not force:
        source = taken[name].source
        where = source.path if source else "the package"
        raise RaylifeError(f"model {name!r} is already declared by {where}; choose another name")
    toml_path, py_path = folder / f"{name}.toml", folder / f"{name.replace('-', '_')}.py"
    for path in (toml_path, py_path) if module else (toml_path,):
        if path.exists() and not force:
            raise RaylifeError(f"{path} exists; pass --force to overwrite it or pick another name")
    frame = read_table(uri)
    found = infer(frame, target, uri)
    chosen = task or found.task
    notes = [
        f"task: {chosen} ("
        + (f"inferred: target {target!r} is {found.reason}" if task is None else "from --task")
        + "; change `task` in the file to override)",
        f"rows: {found.rows}, features: {found.features}"
        + (f", id column {found.id_column!r} kept out of the features" if found.id_column else ""),
    ]
    plan = recipe.for_table(found.rows, found.features, chosen)
    notes.append(
        f"recipe: hidden {list(plan.hyperparameters['hidden_sizes'])}, batch "
        f"{plan.hyperparameters['batch_size']}, {plan.hyperparameters['epochs']} epochs "
        f"(scaled to {found.rows} rows); a {len(plan.search)}-dimension search space"
    )
    kind = f"{py_path.stem}:build" if module else "mlp"
    written_uri = uri  # a local path is written relative to the declaration (specs resolves it)
    if "://" not in uri and not os.path.isabs(uri):
        written_uri = os.path.relpath(os.path.abspath(uri), folder.resolve())
    document: dict[str, Any] = {
        "name": name,
        "description": f"{chosen} model of {target!r} from {found.features} features of {uri}",
        "task": chosen,
        "data": {
            "uri": written_uri,
            "target": target,
            **({"id_column": found.id_column} if found.id_column else {}),
        },
        "architecture": {"kind": kind},
        "hyperparameters": plan.hyperparameters,
        "debug": plan.debug,
        "search": plan.search,
        "gate": plan.gate,
    }
    text = HEADER.format(name=name) + to_toml(document)
    parsed = declaration.Declaration.model_validate(_loads(text))
    if not module:
        from_declaration(parsed)  # the same checks as every later read, before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    toml_path.write_text(text)
    written = [toml_path]
    if module:
        py_path.write_text(FACTORY_TEMPLATE.format(name=name))
        written.append(py_path)
    return written, notes


def _loads(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


HEADER = """\
# The declaration of model {name!r}, written by `raylife init`: edit any value (docs/catalogue.md
# explains each field). `raylife run --models {name}` sweeps, gates, stores and serves it.

"""

FACTORY_TEMPLATE = '''\
"""The architecture of model {name!r}: `raylife init --module` wrote this skeleton; edit freely.

raylife calls build(hyperparameters, input_shape, n_outputs) in every Ray worker and Serve
replica: hyperparameters is the run's raylife.config.Hyperparams (hidden_sizes, dropout, ... as
searched by `raylife tune`), input_shape the shape of one example ([n_features] for a table), and
n_outputs the logits the task needs (1 for binary and regression, one per class otherwise).
Return logits: the loss applies sigmoid / softmax itself.
"""

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def build(hyperparameters, input_shape, n_outputs):
    width = hyperparameters.hidden_sizes[0]
    blocks = [Residual(width, hyperparameters.dropout) for _ in hyperparameters.hidden_sizes]
    return nn.Sequential(nn.Linear(input_shape[0], width), *blocks, nn.Linear(width, n_outputs))
'''


def to_toml(document: dict[str, Any]) -> str:
    """TOML for the value types a declaration holds (the standard library only reads TOML)."""
    top = [f"{k} = {_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    tables = [
        f"\n[{k}]\n" + "".join(f"{kk} = {_value(vv)}\n" for kk, vv in v.items())
        for k, v in document.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n" + "".join(tables)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")
