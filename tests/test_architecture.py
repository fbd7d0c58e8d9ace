"""The house rules of docs/architecture.md, checked so they keep holding.

- no module over 400 lines, no function over 60 lines;
- no import circles between modelkit modules (module-level imports, TYPE_CHECKING blocks excluded);
- an import inside a function is for a heavy library (torch & co.) only; a light modelkit module
  imported inside a function must say why on that line (`# noqa: cycle` is not accepted: remove the
  cycle instead), so the only excuse left is deferring something heavy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modelkit"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Libraries whose import costs real time (torch & co.) or that are optional extras: a module that
# imports one at module level is "heavy", and deferring it (or such a module) is the point.
HEAVY = {
    "torch",
    "torchvision",
    "transformers",
    "tokenizers",
    "accelerate",
    "lightning",
    "pytorch_lightning",
    "matplotlib",
    "numpy",
    "safetensors",
    "huggingface_hub",
    "sklearn",
    "PIL",
    "model_signing",
}
# Third-party libraries a function may still import where it needs them (light enough, but only
# some verbs use them).
DEFERRABLE = HEAVY | {
    "yaml",
    "pydantic",
    "rich",
    "typer",
    "click",
    "httpx",
    "httpx2",
    "tomli",
    "hypothesis",
    "pytest",
    "pytest_benchmark",
    "cryptography",
    "packaging",
    "typing_extensions",
}


def _modules() -> list[tuple[str, Path, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path, ast.parse(path.read_text(), str(path))))
    return out


MODULES = _modules()
NAMES = {name for name, _, _ in MODULES}


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_module_over_the_line_limit() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for _, path, _ in MODULES
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_the_line_limit() -> None:
    long = {}
    for _, path, tree in MODULES:
        for fn in _functions(tree):
            n = fn.end_lineno - fn.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(PACKAGE.parent)}:{fn.lineno} {fn.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_pkg = (PACKAGE.parent / Path(*module.split("."))).is_dir()
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.stmt) -> list[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(module, node)
        names = [f"{base}.{a.name}" for a in node.names] + [base]
    found = []
    for name in names:
        while name and name not in NAMES:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def _top_level_imports(module: str, tree: ast.Module) -> set[str]:
    edges: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in [node] if not isinstance(node, (ast.If, ast.Try)) else ast.walk(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                edges.update(_targets(module, sub))
    return edges


def _package_parents(module: str) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first: those are edges too."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & NAMES


def _graph() -> dict[str, set[str]]:
    """Module -> the modelkit modules importing it runs (its package __init__s included)."""
    graph = {name: _top_level_imports(name, tree) for name, _, tree in MODULES}
    for name, targets in graph.items():
        for target in list(targets):
            targets.update(
                p for p in _package_parents(target) if p != name and not name.startswith(p + ".")
            )
    return graph


def test_no_import_circles() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles[:10])


def _heavy_modules() -> set[str]:
    """modelkit modules whose import (transitively, at module level) pulls a heavy library in."""
    graph = _graph()
    heavy = {
        name
        for name, _, tree in MODULES
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(n.split(".")[0] in HEAVY for n in _imported_names(node))
        # a module-level __getattr__ hands out heavy names lazily (PEP 562)
        or isinstance(node, ast.FunctionDef)
        and node.name == "__getattr__"
    }
    changed = True
    while changed:
        grown = {name for name, targets in graph.items() if targets & heavy} - heavy
        heavy |= grown
        changed = bool(grown)
    return heavy


def _imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module or ""] if not node.level else []


def test_function_level_imports_only_defer_heavy_libraries() -> None:
    light = []
    heavy = _heavy_modules()
    for name, path, tree in MODULES:
        for fn in _functions(tree):
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                if isinstance(node, ast.ImportFrom) and node.level:
                    top = "modelkit"
                else:
                    top = (
                        node.names[0].name if isinstance(node, ast.Import) else node.module or ""
                    ).split(".")[0]
                if top in DEFERRABLE or top in _stdlib() and top != "modelkit":
                    continue
                if top == "modelkit" and all(t in heavy for t in _targets(name, node)):
                    continue
                light.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not light, (
        f"{len(light)} function-level imports of light modules (import them at module level; only "
        f"heavy libraries and modules that pull them in may be deferred): {light[:20]}"
    )


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)


@pytest.mark.parametrize("limit", [MAX_MODULE_LINES, MAX_FUNCTION_LINES])
def test_limits_are_the_documented_ones(limit: int) -> None:
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert str(limit) in doc


def test_the_benchmark_harness_imports_nothing_from_modelkit() -> None:
    """The harness is copied into both sides' processes (REF imports its own, older modelkit):
    stdlib, pytest and relative imports only (modelkit/bench/harness/__init__.py)."""
    bad = []
    for name, _path, tree in MODULES:
        if not name.startswith("modelkit.bench.harness"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            bad += [f"{name}: {m}" for m in mods if m.split(".")[0] == "modelkit"]
    assert not bad, bad
