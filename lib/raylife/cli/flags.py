"""Command-line flags derived from the typed config dataclasses.

A config field's type gives the flag's parser and choices, its default the flag's default, and
the docstring under the field (`field: int = 2` followed by `\"\"\"...\"\"\"`) its help, so a field
is documented once and the CLI cannot drift from the configs. The flag is the field's name in
kebab case unless the command renames it (`--split-seed` for DataConfig.seed, say).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from typing import Any, Literal, TypeVar

_UNSET = object()
_Config = TypeVar("_Config")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (its first sentence, one line)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def sizes(text: str) -> tuple[int, ...]:
    """`64,32` -> (64, 32): the flag form of a tuple of widths."""
    try:
        parsed = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 64,32, got {text!r}"
        ) from None
    if not parsed:
        raise argparse.ArgumentTypeError("expected at least one size, like 64,32")
    return parsed


def add_config_flags(
    group: argparse._ActionsContainer,
    cls: type,
    fields: list[str],
    rename: dict[str, str] | None = None,
    overrides_only: bool = False,
    extra_help: dict[str, str] | None = None,
) -> None:
    """Add one flag per named field of `cls`. overrides_only: every default is None (the field
    keeps the preset's value unless the flag is given), as hyperparameter flags need."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name in fields:
        dest = (rename or {}).get(name, name)
        flag = "--" + dest.replace("_", "-")
        kwargs = _argparse_kwargs(hints[name])
        default = None if overrides_only else defaults.get(name, dataclasses.MISSING)
        help_text = docs.get(name, "") + (extra_help or {}).get(name, "")
        if kwargs.get("action") == "store_true":
            group.add_argument(flag, dest=dest, action="store_true", help=help_text)
            continue
        if default is not dataclasses.MISSING and default is not None:
            help_text += f" (default: {_shown(default)})"
        group.add_argument(flag, dest=dest, default=default, help=help_text, **kwargs)


def config_values(
    args: argparse.Namespace, fields: list[str], rename: dict[str, str] | None = None
) -> dict[str, Any]:
    """The parsed values of the named fields (as add_config_flags added them), ready for
    `cls(**values)` or `.replace(**values)`."""
    return {name: getattr(args, (rename or {}).get(name, name)) for name in fields}


def config_from_args(
    cls: type[_Config], args: argparse.Namespace, rename: dict[str, str] | None = None
) -> _Config:
    """The config of every field of `cls` as parsed (a command whose options dataclass has one
    flag per field: `add_config_flags(parser, cls, [every field])`)."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**config_values(args, names, rename))


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _argparse_kwargs(hint: Any) -> dict[str, Any]:
    hint = _without_none(hint)
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"action": "store_true"}
    if origin is Literal:
        return {"choices": list(typing.get_args(hint))}
    if origin is tuple:
        return {"type": sizes, "metavar": "N,N"}
    if hint in (int, float, str):
        return {"type": hint}
    raise TypeError(f"no flag form for a field of type {hint!r}")


def _without_none(hint: Any) -> Any:
    """`int | None` -> int (a flag that is absent is None already)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint
