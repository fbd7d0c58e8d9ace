"""Where a model's ``module:attr`` is imported from, the way Python itself would find it.

A pyproject.toml's root (and ``src/``) comes first (:meth:`modelkit.project.Project.activate`).
Then, appended so they never shadow it: the current directory (``python -m`` puts it on the
path; the ``modelkit`` console script does not), and for a run or release directory the folder
itself (a release may carry the model's source file) and the places its run.json records: the
training script's folder, the directory it ran in and the git root
(:func:`modelkit.runs.layout.recorded_roots`).

A module that would run training when imported (a top-level ``start_run(...)``,
``trainer.fit(...)``, ``trainer.train(...)`` or ``main()`` outside ``if __name__ == "__main__":``) is refused
before it is imported: rebuilding a model must never re-run (and replace) a training run.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, ModelNotImportable, NotImportable

__all__ = ["add_fallback_paths", "refuse_training_module"]

_TRAINING_CALLS = frozenset({"start_run", "fit", "train", "main"})  # main(): a script's entry


def add_fallback_paths(paths: list[Path]) -> None:
    """Append existing ``paths`` to ``sys.path`` (after everything already there)."""
    for p in paths:
        s = str(p)
        if p.is_dir() and s not in sys.path:
            sys.path.append(s)


def refuse_training_module(module_name: str, *, reference: str) -> None:
    """Raise :class:`ModelNotImportable` when importing ``module_name`` would run training."""
    if module_name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return  # the import itself will say what is wrong
    origin = getattr(spec, "origin", None) if spec is not None else None
    if not origin or not origin.endswith(".py"):
        return
    try:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return
    line = _top_level_training_call(tree)
    if line is not None:
        raise ModelNotImportable(
            reference,
            f"importing {origin} would run training (line {line} runs at import)",
            hint="move the model class into a module of its own, or put the training code "
            'under `if __name__ == "__main__":`',
        )


def _top_level_training_call(tree: ast.Module) -> int | None:
    """The line of a training call that runs at import (not in a def, class or main guard)."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(stmt, ast.If) and _is_main_guard(stmt.test):
            continue
        line = _call_in(stmt)
        if line is not None:
            return line
    return None


def _call_in(node: ast.AST) -> int | None:
    """The first training call in ``node``, not descending into code that does not run now."""
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _TRAINING_CALLS:
            return node.lineno
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        line = _call_in(child)
        if line is not None:
            return line
    return None


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def import_object(spec: str, *, what: str) -> Any:
    """Import ``package.module:attr`` and return the attribute (typed error when it fails)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise BadInputError(
            f"invalid {what} reference '{spec}'", hint="use the form package.module:callable"
        )
    add_fallback_paths([Path.cwd()])  # as `python -m` has it (the console script does not)
    refuse_training_module(module_name, reference=spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cls = ModelNotImportable if what == "model" else NotImportable
        kind = {} if what == "model" else {"what": what}
        raise cls(spec, f"no module named '{exc.name or module_name}'", **kind) from None
    except Exception as exc:
        raise BadInputError(
            f"importing '{module_name}' for {what} '{spec}' failed: {type(exc).__name__}: {exc}",
            hint="fix the error in that module",
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BadInputError(
                f"module '{module_name}' has no attribute '{attr}' ({what} '{spec}')",
                hint=f"define {attr} in {module_name}",
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise BadInputError(f"{what} '{spec}' is not callable", hint="point at a function or class")
    return obj


def _qualified(obj: Any) -> str:
    """``module:qualname`` for a class or function, mapping ``__main__`` to its module name."""
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", "") or getattr(obj, "__name__", "")
    if "<locals>" in qualname or not qualname:
        raise BadInputError(
            f"{qualname or obj!r} is defined inside a function, so nothing can import it",
            hint="define the model class (or factory) at module level",
        )
    if module == "__main__":
        module = _main_module_name()
    return f"{module}:{qualname}"


def _main_module_name() -> str:
    """The importable name of the script running as ``__main__`` (``python train.py`` -> train)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":  # python -m pkg.mod
        return spec.name
    file = getattr(main, "__file__", None)
    if file:
        path = Path(file).resolve()
        roots = [Path(p or ".").resolve() for p in sys.path] + [Path.cwd().resolve()]
        for root in roots:
            try:
                rel = path.with_suffix("").relative_to(root)
            except ValueError:
                continue
            parts = rel.parts
            if parts and all(p.isidentifier() for p in parts):
                return ".".join(parts)
    raise BadInputError(
        "the model class is defined in a script that cannot be imported by name",
        hint="move the model class into a module, or pass reference='module:Class' to start_run",
    )
