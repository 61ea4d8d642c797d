"""Flags derived from the config dataclasses: the field's type, default and docstring make the
flag, so the CLI cannot drift from the configs."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from raylife.cli import build_parser
from raylife.cli.flags import add_config_flags, config_values, field_docs
from raylife.config import Hyperparams, TrainConfig


@dataclass(frozen=True)
class Example:
    width: int = 3
    """How wide. Second sentence."""
    kind: Literal["a", "b"] = "a"
    """Which kind."""
    sizes: tuple[int, ...] = (1, 2)
    """Layer sizes."""
    rate: float | None = None
    """A rate, when set."""
    loud: bool = False
    """Shout."""


def _parse(argv: list[str], **kwargs) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Example, [f.name for f in dataclasses.fields(Example)], **kwargs)
    return parser.parse_args(argv)


def test_types_defaults_and_docs_come_from_the_fields():
    assert field_docs(Example)["width"] == "How wide. Second sentence."
    args = _parse([])
    assert config_values(args, ["width", "kind", "sizes", "rate", "loud"]) == {
        "width": 3,
        "kind": "a",
        "sizes": (1, 2),
        "rate": None,
        "loud": False,
    }
    args = _parse(["--width", "5", "--kind", "b", "--sizes", "64,32", "--rate", "0.5", "--loud"])
    assert Example(**config_values(args, ["width", "kind", "sizes", "rate", "loud"])) == Example(
        5, "b", (64, 32), 0.5, True
    )


def test_bad_values_are_refused_by_the_parser():
    with pytest.raises(SystemExit):
        _parse(["--kind", "c"])
    with pytest.raises(SystemExit):
        _parse(["--sizes", "a,b"])


def test_overrides_only_leaves_absent_flags_none_and_renames_apply():
    args = _parse([], overrides_only=True, rename={"width": "breadth"})
    assert args.breadth is None and args.kind is None
    assert config_values(args, ["width"], {"width": "breadth"}) == {"width": None}


def test_every_config_field_the_train_verb_sets_is_documented_in_its_help():
    """The help of `raylife train` carries each field's docstring, not a restatement."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    helps = {a.dest: a.help or "" for a in train._actions}
    assert helps["lr_schedule"].startswith(field_docs(Hyperparams)["lr_schedule"][:40])
    assert helps["num_workers"].startswith(field_docs(TrainConfig)["num_workers"])
    assert "(default: 2)" in helps["num_workers"]
