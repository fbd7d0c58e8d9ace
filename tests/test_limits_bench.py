"""The gate stays readable: no module over 400 lines, no function over 60, no import circle
among the gate's modules (module-level imports; ``modelkit/bench/`` and the benchmark verb)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "modelkit"
OWNED = sorted([*PKG.joinpath("bench").rglob("*.py"), PKG / "cli" / "benchmark.py"])


def _name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", OWNED, ids=lambda p: str(p.relative_to(PKG)))
def test_module_and_function_lengths(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 400, f"{path.name}: {len(source.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, f"{path.name}: functions over 60 lines: {long}"


def _imports(path: Path, package: str, modules: set[str]) -> set[str]:
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else f"{package}.{node.module}"
            out |= {m for m in (base, *(f"{base}.{a.name}" for a in node.names)) if m in modules}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
    return out


def test_no_import_circle_in_the_gate() -> None:
    files = {_name(p): p for p in OWNED if p.parent.name in ("bench", "harness")}
    graph = {
        name: _imports(path, name if path.name == "__init__.py" else name.rsplit(".", 1)[0],
                       set(files)) - {name}
        for name, path in files.items()
    }  # fmt: skip
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            assert seen.get(nxt) != 1, "import circle: " + " -> ".join([*stack, node, nxt])
            if nxt not in seen:
                visit(nxt, [*stack, node])
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [])
    assert graph["modelkit.bench.deciders"] >= {"modelkit.bench.stats", "modelkit.bench.sides"}
