"""docs/architecture.md stays true: every module is on the page, and imports keep the layering
the page describes (core <- serve <- tools/deploy <- cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "architecture.md").read_text()
MODULES = sorted(
    path.relative_to(ROOT).as_posix()
    for folder in ("lib/raylife", "jobs", "serve_apps", "tests/support")
    for path in (ROOT / folder).rglob("*.py")
)


def test_every_module_is_on_the_page():
    missing = [module for module in MODULES if f"`{module}`" not in PAGE]
    assert not missing, f"add a line for each to docs/architecture.md: {missing}"


def test_the_page_names_no_module_that_is_gone():
    import re

    named = set(re.findall(r"`((?:lib/raylife|jobs|serve_apps|tests/support)/[\w/]+\.py)`", PAGE))
    assert named - set(MODULES) == set()


def _raylife_imports(path: Path) -> set[str]:
    """Every raylife module this file imports, at any depth (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "raylife":
                found |= {f"raylife.{alias.name}" for alias in node.names}
            elif node.module.startswith(("raylife.", "jobs", "serve_apps", "tests")):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("raylife")}
    return found


def _role(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "raylife":
        return parts[0]
    return (
        parts[1] if len(parts) >= 2 and parts[1] in ("cli", "serve", "tools", "deploy") else "core"
    )


FORBIDDEN = {
    "core": {"cli", "tools", "deploy", "serve", "jobs", "serve_apps", "tests"},
    "serve": {"cli", "tools", "deploy", "jobs", "serve_apps", "tests"},
    "tools": {"cli", "jobs", "serve_apps", "tests"},
    "deploy": {"cli", "jobs", "serve_apps", "tests"},
    "cli": {"jobs", "serve_apps", "tests"},
}
ALLOWED = {("raylife.cli.main_job", "serve")}
"""The main job serves what it trained: the one core module allowed to import serve/."""


@pytest.mark.parametrize("path", [p for p in MODULES if p.startswith("lib/")])
def test_imports_point_down_the_layers(path):
    module = (
        path.removeprefix("lib/").removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    )
    role = _role(module)
    bad = [
        imported
        for imported in _raylife_imports(ROOT / path)
        if _role(imported) in FORBIDDEN[role] and (module, _role(imported)) not in ALLOWED
    ]
    assert not bad, f"{module} ({role}) imports {bad}; see docs/architecture.md"
