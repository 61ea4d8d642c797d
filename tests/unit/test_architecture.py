"""docs/architecture.md stays true: every module is on the page, imports keep the layering the
page describes (core <- serve <- deploy <- cli; the dev package beside them, never imported by
them), no import cycle exists, function-level imports included, and a function-level import of a
project module says why it is one."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "architecture.md").read_text()
MODULES = sorted(
    path.relative_to(ROOT).as_posix()
    for folder in ("lib/raylife", "lib/raylife_dev", "jobs", "serve_apps", "tests/support")
    for path in (ROOT / folder).rglob("*.py")
)


def test_every_module_is_on_the_page():
    missing = [module for module in MODULES if f"`{module}`" not in PAGE]
    assert not missing, f"add a line for each to docs/architecture.md: {missing}"


def test_the_page_names_no_module_that_is_gone():
    import re

    named = set(
        re.findall(
            r"`((?:lib/raylife_dev|lib/raylife|jobs|serve_apps|tests/support)/[\w/]+\.py)`", PAGE
        )
    )
    assert named - set(MODULES) == set()


PACKAGES = ("raylife", "raylife_dev")
LIB = {
    path.relative_to(ROOT / "lib")
    .with_suffix("")
    .as_posix()
    .removesuffix("/__init__")
    .replace("/", "."): path
    for package in PACKAGES
    if (ROOT / "lib" / package).is_dir()
    for path in (ROOT / "lib" / package).rglob("*.py")
}
"""Every module of the runtime package and the dev package, by dotted name."""


@dataclass(frozen=True)
class Import:
    module: str
    line: int
    lazy: bool
    """Inside a function: runs when the function does, not when the module is imported."""
    reason: str
    """The comment on the import's line or just above its group of imports ("" = none)."""


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _targets(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The project modules an import statement loads (a name imported from a package that is
    itself a module counts as that module)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] in PACKAGES + ROLES_OUTSIDE}
    if not node.module or node.level:
        return set()
    if node.module.split(".")[0] in ROLES_OUTSIDE:
        return {node.module}
    if node.module.split(".")[0] not in PACKAGES:
        return set()
    found = set()
    for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        found.add(sub if sub in LIB else node.module)
    return found


def _comment(lines: list[str], node: ast.stmt, siblings: list[ast.stmt]) -> str:
    """The reason of an import: a comment on its lines, or on the line above the run of import
    statements it belongs to."""
    for number in range(node.lineno, (node.end_lineno or node.lineno) + 1):
        if "#" in lines[number - 1]:
            return lines[number - 1].split("#", 1)[1].strip()
    first = node
    index = siblings.index(node)
    while index > 0 and isinstance(siblings[index - 1], (ast.Import, ast.ImportFrom)):
        index -= 1
        first = siblings[index]
        if "#" in lines[first.lineno - 1]:
            return lines[first.lineno - 1].split("#", 1)[1].strip()
    above = lines[first.lineno - 2].strip() if first.lineno > 1 else ""
    return above.lstrip("#").strip() if above.startswith("#") else ""


def _imports(path: Path) -> list[Import]:
    """Every project import of a file that runs (TYPE_CHECKING blocks do not), lazy ones marked."""
    lines = path.read_text().splitlines()
    found: list[Import] = []

    def visit(body: list[ast.stmt], lazy: bool) -> None:
        for node in body:
            if _is_type_checking(node):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                reason = _comment(lines, node, body) if lazy else ""
                found.extend(Import(m, node.lineno, lazy, reason) for m in _targets(node))
            inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for field in ("body", "orelse", "finalbody", "handlers"):
                child = getattr(node, field, None)
                if isinstance(child, list) and child and isinstance(child[0], ast.AST):
                    visit(child, inner)  # type: ignore[arg-type]

    visit(ast.parse("\n".join(lines)).body, lazy=False)
    return found


def _role(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "raylife_dev":
        return "dev"
    if parts[0] != "raylife":
        return parts[0]
    return parts[1] if len(parts) >= 2 and parts[1] in ("cli", "serve", "deploy") else "core"


ROLES_OUTSIDE = ("jobs", "serve_apps", "tests")
FORBIDDEN = {
    "core": {"cli", "dev", "deploy", "serve", "jobs", "serve_apps", "tests"},
    "serve": {"cli", "dev", "deploy", "jobs", "serve_apps", "tests"},
    "deploy": {"cli", "dev", "jobs", "serve_apps", "tests"},
    "cli": {"dev", "jobs", "serve_apps", "tests"},
    "dev": {"jobs", "serve_apps", "tests"},
}
ALLOWED = {("raylife.cli", "dev")}
"""(module, role) pairs allowed past FORBIDDEN: the CLI's one try-import of the dev verbs."""


@pytest.mark.parametrize("module", sorted(LIB))
def test_imports_point_down_the_layers(module):
    role = _role(module)
    bad = [
        i.module
        for i in _imports(LIB[module])
        if _role(i.module) in FORBIDDEN[role] and (module, _role(i.module)) not in ALLOWED
    ]
    assert not bad, f"{module} ({role}) imports {bad}; see docs/architecture.md"


def _graph() -> dict[str, set[str]]:
    return {
        module: {i.module for i in _imports(path) if i.module in LIB and i.module != module}
        for module, path in LIB.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycles_not_even_through_function_level_imports():
    cycles = _cycles(_graph())
    assert not cycles, (
        f"import cycles (function-level imports count): {cycles}; move the shared part down "
        "into a module both can import (see docs/architecture.md)"
    )


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


HIDING = ("cycle", "circular")


@pytest.mark.parametrize("module", sorted(LIB))
def test_a_function_level_import_states_its_reason(module):
    """A lazy import of a project module needs a reason on its line or just above its group
    (a heavy dependency it defers, say); avoiding a cycle is not one."""
    lazy = [i for i in _imports(LIB[module]) if i.lazy and i.module.split(".")[0] in PACKAGES]
    silent = [f"line {i.line}: {i.module}" for i in lazy if not i.reason]
    hiding = [
        f"line {i.line}: {i.reason}" for i in lazy if any(w in i.reason.lower() for w in HIDING)
    ]
    assert not silent, f"{module}: say why each is imported in the function: {silent}"
    assert not hiding, f"{module}: a lazy import may not hide a cycle: {hiding}"
