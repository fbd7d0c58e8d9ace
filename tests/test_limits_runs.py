"""The run core stays readable: no module over 400 lines, no function over 60, no import circle.

Checked on the run core (``modelkit/runs/``), the public API (``tracking.py``) and the built-in
trainer's writes (``training/record.py``, ``state.py``, ``loop.py``, ``entry.py``). A circle is
looked for in module-level imports (``TYPE_CHECKING`` blocks excluded) over all of modelkit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "modelkit"
OWNED = sorted(
    [*PKG.joinpath("runs").glob("*.py"), PKG / "tracking.py"]
    + [PKG / "training" / f"{m}.py" for m in ("record", "state", "loop", "entry")]
)


def _name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", OWNED, ids=lambda p: str(p.relative_to(PKG)))
def test_module_and_function_lengths(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 400, f"{path.name} has {len(source.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """The modelkit modules ``path`` imports at module level (not under TYPE_CHECKING)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
    return {m for m in out if m in modules}


def test_no_import_circle_through_the_run_core() -> None:
    files = {_name(p): p for p in PKG.rglob("*.py")}
    graph = {name: _module_imports(path, set(files)) for name, path in files.items()}
    owned = {_name(p) for p in OWNED}
    for start in sorted(owned):
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    pytest.fail("import circle: " + " -> ".join([*trail, nxt]))
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
