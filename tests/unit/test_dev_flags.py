"""The developer verbs' flags come from their options dataclasses (raylife_dev.cli): each flag has
a help line and the field's default, and the Makefile's invocations parse to the configs they
mean."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import typing
from pathlib import Path

import pytest

from raylife.cli.flags import config_from_args, field_docs
from raylife.errors import RaylifeError
from raylife_dev import cli as dev_cli
from raylife_dev.cli import (
    BenchOptions,
    GpuCheckOptions,
    LoadtestOptions,
    QualityOptions,
    ReportCostOptions,
    SelectionStudyOptions,
)

MAKEFILE = (Path(__file__).resolve().parents[2] / "Makefile").read_text()

COMMANDS = {
    "quality": (QualityOptions, {}),
    "selection-study": (SelectionStudyOptions, dev_cli.SELECTION_STUDY_RENAME),
    "bench": (BenchOptions, {}),
    "report-cost": (ReportCostOptions, {}),
    "gpu-check": (GpuCheckOptions, {}),
    "loadtest": (LoadtestOptions, dev_cli.LOADTEST_RENAME),
}
"""verb -> (its options dataclass, field -> flag dest where they differ)."""

NOT_OPTIONS = {"help", "store"}
"""Flags that are no option of the measurement: argparse's --help, the store (Settings)."""


def _verbs() -> dict[str, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser()
    verbs = parser.add_subparsers(dest="verb")
    dev_cli.register(verbs)
    return dict(verbs.choices)


def _parse(argv: list[str]) -> tuple[str, object]:
    verb, *rest = argv
    cls, rename = COMMANDS[verb]
    args = _verbs()[verb].parse_args(rest)
    return verb, config_from_args(cls, args, rename)


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_flag_has_help_and_the_fields_default(verb):
    cls, rename = COMMANDS[verb]
    actions = {a.dest: a for a in _verbs()[verb]._actions if a.dest not in NOT_OPTIONS}
    fields = {rename.get(f.name, f.name): f for f in dataclasses.fields(cls)}
    assert set(actions) == set(fields), "one flag per field, one field per flag"
    docs = field_docs(cls)
    for dest, field in fields.items():
        action = actions[dest]
        assert action.help and docs[field.name] in action.help, f"--{dest}: no help line"
        default = tuple(action.default) if isinstance(action.default, list) else action.default
        assert default == field.default, f"--{dest}: default {default!r} != {field.default!r}"
        assert action.option_strings == ["--" + dest.replace("_", "-")], "kebab-case flags"
    assert config_from_args(cls, _verbs()[verb].parse_args([]), rename) == cls()


def _make_invocations(target: str) -> list[list[str]]:
    """The `$(RAYLIFE) ...` lines of a Makefile target, its variables set to their defaults."""
    defaults = dict(re.findall(r"^(\w+) \?= (.*)$", MAKEFILE, re.M))
    recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert recipe, f"no target {target} in the Makefile"
    lines = [line.strip() for line in recipe.group(1).splitlines()]
    expanded = [
        re.sub(r"\$\((\w+)\)", lambda m: defaults.get(m.group(1), m.group(0)), line)
        for line in lines
        if line.startswith("$(RAYLIFE) ")
    ]
    return [shlex.split(line)[1:] for line in expanded]


MAKE_TARGETS = {
    "quality": [QualityOptions(models="all", seeds="0,1,2,3,4,5,6,7,8,9")],
    "quality-stream": [
        QualityOptions(
            seeds="0,1,2,3,4,5,6,7,8,9", via="stream", output="reports/quality-stream.json"
        )
    ],
    "selection-study": [
        SelectionStudyOptions(models="ionosphere,iris,boston", seeds="0,1,2"),
        SelectionStudyOptions(models="mnist", seeds="0,1,2", folds=5, repeats=2),
    ],
    "bench": [BenchOptions()],
    "bench-quick": [BenchOptions(quick=True)],
    "report-cost": [ReportCostOptions(model="iris")],
    "loadtest": [LoadtestOptions(model="iris", concurrency=16, requests=2000, baseline=True)],
}


@pytest.mark.parametrize("target", sorted(MAKE_TARGETS))
def test_the_makefiles_invocations_parse_to_the_configs_they_mean(target):
    parsed = [_parse(argv)[1] for argv in _make_invocations(target)]
    assert parsed == MAKE_TARGETS[target]


def test_flags_given_reach_the_config():
    _, options = _parse(
        ["selection-study", "--first-repeat", "5", "--set", "lr=1e-3", "--set", "epochs=[2]"]
    )
    assert options.first_repeat == 5 and options.overrides == ("lr=1e-3", "epochs=[2]")
    assert options.hparam_overrides() == {"lr": 1e-3, "epochs": [2]}
    _, options = _parse(["loadtest", "--url", "http://x", "--batching", "off", "--json"])
    assert (options.url, options.batching, options.as_json) == ("http://x", "off", True)
    _, options = _parse(["gpu-check", "--gpus-per-replica", "0.25"])
    assert options == GpuCheckOptions(gpus_per_replica=0.25)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"folds": 1}, "--folds must be >= 2, got 1"),
        ({"repeats": 0}, "--repeats must be >= 1"),
        ({"processes": 0}, "--processes must be >= 1"),
        ({"first_repeat": -1}, "--first-repeat must be >= 0"),
        ({"overrides": ("lr",)}, "--set takes NAME=VALUE like lr=0.001, got 'lr'"),
    ],
)
def test_selection_study_options_are_validated_on_construction(fields, message):
    with pytest.raises(RaylifeError, match=re.escape(message)):
        SelectionStudyOptions(**fields)


def test_the_choices_are_those_the_modules_accept():
    from raylife_dev import quality
    from raylife_dev.bench import runner

    assert typing.get_args(typing.get_type_hints(QualityOptions)["via"]) == quality.VIA
    sections = "".join(field_docs(BenchOptions)["sections"].split())
    assert ",".join(runner.SECTIONS) in sections and ",".join(runner.QUICK_SECTIONS) in sections
