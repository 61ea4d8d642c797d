"""reports/bench.json (everything measured) and reports/bench.md (the table a reader wants)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raylife_dev.bench.stats import Section


def to_json(sections: list[Section], meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "sections": {s.name: s.to_dict() for s in sections}}


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def to_markdown(sections: list[Section], meta: dict[str, Any]) -> str:
    lines = [
        f"# raylife bench ({'quick' if meta['quick'] else 'full'})",
        "",
        f"{meta['machine']} · Ray {meta['ray']} · torch {meta['torch']} · {meta['started']}"
        f" · {meta['seconds']:.0f} s",
        "",
        "Contenders alternate (A B A B ...); figures are medians of the rounds, with min-max.",
        "",
        "## Targets",
        "",
        "| check | value | target | met |",
        "| --- | --- | --- | --- |",
    ]
    for section in sections:
        for c in section.checks:
            note = f" ({c.note})" if c.note else ""
            lines.append(
                f"| {section.name}: {c.name}{note} | {_fmt(c.value)} | {c.op} {_fmt(c.target)} "
                f"| {'yes' if c.met else '**no**'} |"
            )
    for section in sections:
        lines += ["", f"## {section.name} ({section.seconds:.0f} s)", ""]
        lines.append("setup: " + ", ".join(f"{k}={v}" for k, v in section.setup.items()))
        lines += ["", "| figure | median | min-max | unit |", "| --- | --- | --- | --- |"]
        for name, fig in section.figures.items():
            spread = f"{_fmt(min(fig.values))}-{_fmt(max(fig.values))}"
            lines.append(f"| {name} | {_fmt(fig.median)} | {spread} | {fig.unit} |")
        for key, value in section.extra.items():
            shown = _fmt(value) if isinstance(value, float) else json.dumps(value, default=str)
            lines.append(f"\n{key}: {shown}")
    return "\n".join(lines) + "\n"


def write(out_dir: Path, sections: list[Section], meta: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "bench.json", out_dir / "bench.md"
    json_path.write_text(json.dumps(to_json(sections, meta), indent=2, default=str) + "\n")
    md_path.write_text(to_markdown(sections, meta))
    return json_path, md_path
