"""repro, scaffold and the trust-boundary modules stay readable: no module over 400 lines, no
function over 60 (issue 24.5). Import circles over all of modelkit: tests/test_limits_runs.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "modelkit"
OWNED = sorted(
    [*PKG.joinpath("repro").glob("*.py"), *PKG.joinpath("scaffold").glob("*.py")]
    + [PKG / f"{m}.py" for m in ("redact", "readers", "usercode")]
    + [PKG / "training" / "dryrun.py"]
)


@pytest.mark.parametrize("path", OWNED, ids=lambda p: str(p.relative_to(PKG)))
def test_module_and_function_lengths(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 400, f"{path.name} has {len(source.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


def test_no_function_level_import_between_repro_modules() -> None:
    """repro's modules import each other at module level only: no circle hidden in a function."""
    hidden = []
    for path in PKG.joinpath("repro").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                for inner in ast.walk(node):
                    module = getattr(inner, "module", None) or ""
                    heavy = module == "modelkit.repro.compare"  # imports torch: deferred
                    if isinstance(inner, ast.ImportFrom) and module.startswith("modelkit.repro"):
                        if heavy:
                            continue
                        hidden.append(f"{path.name}:{node.name} -> {module}")
    assert hidden == []
