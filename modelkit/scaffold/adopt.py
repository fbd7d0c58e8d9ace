"""``modelkit init --force`` on an existing repository: find its model and training script.

The repository's Python files are read (never imported: importing a training script may
train) and scanned with :mod:`ast` for

* model classes: module-level classes deriving from ``nn.Module`` / ``torch.nn.Module`` /
  ``Module`` (imported from ``torch.nn``), or from another such class in the same file;
* training scripts: files with an ``if __name__ == "__main__":`` block that call
  ``.backward()`` and ``.step()``.

The model is registered in ``[tool.modelkit.models]`` (and made the default) instead of the
template model; the training script becomes ``make run`` / ``make repro``. The template's
model package, its tests and its benchmarks are left out: they test a model the repository
does not have.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError

# directories never scanned
SKIP_DIRS = frozenset(
    {".git", ".venv", "venv", "env", "build", "dist", "node_modules", "__pycache__", "runs"}
)
MAX_FILES = 2000
MODULE_BASES = frozenset({"nn.Module", "torch.nn.Module", "Module"})
# template files that only make sense with the template model
TEMPLATE_MODEL_FILES = (
    "src/{package}/__init__.py",
    "src/{package}/model.py",
    "benchmarks/test_speed.py",
    "configs/smoke.toml",
)


ADOPTED_TEST = '''"""{name}'s model, as registered for modelkit (by `modelkit init --force`)."""

from __future__ import annotations

from pathlib import Path

import torch

from modelkit.project import import_object, load_project

ROOT = Path(__file__).resolve().parents[1]


def test_registered_model_imports() -> None:
    """[tool.modelkit.models] names an importable model class or factory."""
    ref = load_project(ROOT).models["{name}"]
    obj = import_object(ref, what="model")
    assert callable(obj)
    if isinstance(obj, type):
        assert issubclass(obj, torch.nn.Module)
'''


@dataclass(frozen=True)
class Adoption:
    """What ``init --force`` registers for an existing repository."""

    model_name: str  # the name in [tool.modelkit.models]
    model_ref: str  # "module:Class" (or a factory)
    script: str | None  # the training script, relative to the root
    candidates: tuple[str, ...] = ()  # every model class found

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "model": self.model_name,
            "reference": self.model_ref,
            "script": self.script,
            "candidates": list(self.candidates),
        }


def _python_files(root: Path) -> list[Path]:
    out: list[Path] = []
    stack = [root]
    while stack and len(out) < MAX_FILES:
        d = stack.pop()
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for p in entries:
            if p.is_dir() and not p.is_symlink():
                if p.name not in SKIP_DIRS and not p.name.startswith("."):
                    stack.append(p)
            elif p.suffix == ".py" and p.is_file():
                out.append(p)
    return sorted(out)


def _module_name(root: Path, path: Path) -> str | None:
    """The importable name of ``path`` from ``root`` (or ``root/src``); None if it has none."""
    for base in (root / "src", root):
        try:
            rel = path.relative_to(base).with_suffix("")
        except ValueError:
            continue
        parts = list(rel.parts)
        if parts and parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and all(p.isidentifier() for p in parts):
            return ".".join(parts)
    return None


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _model_classes(tree: ast.Module) -> list[str]:
    found: list[str] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {_dotted(b) for b in node.bases}
        if bases & MODULE_BASES or bases & set(found):
            found.append(node.name)
    return found


def _is_training_script(tree: ast.Module, text: str) -> bool:
    has_main = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
    return has_main and ".backward(" in text and re.search(r"\.step\(", text) is not None


def scan(root: Path) -> tuple[list[str], list[str]]:
    """``(model references "module:Class", training scripts relative to root)`` in ``root``."""
    models: list[str] = []
    scripts: list[str] = []
    for path in _python_files(root):
        rel = path.relative_to(root)
        if rel.parts[0] in ("tests", "test", "benchmarks", "docs"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        module = _module_name(root, path)
        if module is not None:
            models.extend(f"{module}:{cls}" for cls in _model_classes(tree))
        if _is_training_script(tree, text):
            scripts.append(rel.as_posix())
    return models, scripts


def find_adoption(
    root: Path, *, name: str, model: str | None = None, script: str | None = None
) -> Adoption | None:
    """The model (and script) of an existing repository, or None when it has no model.

    ``model`` ("module:attr") and ``script`` override what the scan finds. More than one
    model class and no ``model`` is a BadInputError listing them.
    """
    if model is not None:
        module, sep, attr = model.partition(":")
        if not sep or not attr or not all(p.isidentifier() for p in module.split(".")):
            raise BadInputError(
                f"--model '{model}' must be module:attr (a model class or a factory)",
                hint="e.g. --model train:Net, or --model my_pkg.models:build",
            )
    if not root.is_dir():
        return None
    models, scripts = scan(root)
    if script is not None and not (root / script).is_file():
        raise BadInputError(f"--script {script} not found in {root}", hint="e.g. --script train.py")
    if model is None:
        if not models:
            return None
        if len(models) > 1:
            raise BadInputError(
                f"{root} defines {len(models)} model classes: {', '.join(models)}",
                hint=f"pick the one to register: --model {models[0]}",
            )
        model = models[0]
    elif model not in models:
        _check_defined(root, model, models)
    if script is None and scripts:
        # prefer the script that defines or imports the model's module
        module = model.partition(":")[0]
        preferred = [s for s in scripts if _module_name(root, root / s) == module]
        script = (preferred or scripts)[0]
    return Adoption(model_name=name, model_ref=model, script=script, candidates=tuple(models))


def _check_defined(root: Path, model: str, models: list[str]) -> None:
    """Refuse a ``module:attr`` whose module is not in ``root`` or does not define ``attr``
    (read, never imported: init runs no code of the repository)."""
    import ast

    module, _, attr = model.partition(":")
    rel = Path(*module.split("."))
    found = [p for base in (root, root / "src")
             for p in (base / rel.with_suffix(".py"), base / rel / "__init__.py") if p.is_file()]  # fmt: skip
    seen = f" (model classes found: {', '.join(models)})" if models else ""
    if not found:
        raise BadInputError(
            f"--model '{model}': no module '{module}' in {root}{seen}",
            hint=f"name a module of the repository: --model {models[0] if models else 'train:Net'}",
        )
    try:
        tree = ast.parse(found[0].read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return  # the module's own problem; registering it is still what was asked
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    if attr not in names:
        raise BadInputError(
            f"--model '{model}': {found[0].relative_to(root)} defines no '{attr}'{seen}",
            hint=f"name a class or factory it defines: --model {models[0] if models else module + ':Net'}",
        )


def adopt_files(files: dict[str, str], adoption: Adoption, *, package: str) -> dict[str, str]:
    """The rendered template files, changed to register ``adoption`` instead of the template."""
    drop = {f.format(package=package) for f in TEMPLATE_MODEL_FILES}
    out = {rel: text for rel, text in files.items() if rel not in drop}
    name, ref = adoption.model_name, adoption.model_ref
    py = out.get("pyproject.toml")
    if py is not None:
        py = re.sub(r'(?m)^"[^"\n]*" = "[^"\n]*\.model:build"$', f'"{name}" = "{ref}"', py, count=1)
        py = py.replace(
            '[tool.setuptools.packages.find]\nwhere = ["src"]',
            '[tool.setuptools.packages.find]\nwhere = ["."]\nexclude = ["tests*", "benchmarks*"]',
        )
        py = py.replace('pythonpath = ["src"]', 'pythonpath = ["."]')
        out["pyproject.toml"] = py
    out["tests/test_model.py"] = ADOPTED_TEST.replace("{name}", name)
    if adoption.script and "Makefile" in out:
        cmd = f"$(BIN)/python {adoption.script}"
        out["Makefile"] = (
            out["Makefile"]
            .replace("$(BIN)/modelkit train --out runs/main --overwrite", cmd)
            .replace(".PHONY: run test lint bench clean", ".PHONY: run repro test lint bench clean")
            .replace(
                "test: $(STAMP)",
                "# your training script, twice in fresh processes, compared bit for bit\n"
                f"repro: $(STAMP)\n\t$(BIN)/modelkit repro --deterministic --control -- {cmd}\n\n"
                "test: $(STAMP)",
                1,
            )
        )
    return out


def pyproject_addition(adoption: Adoption) -> str:
    """The ``[tool.modelkit]`` block appended to an existing pyproject.toml that has none."""
    return (
        "\n[tool.modelkit]  # added by `modelkit init --force`\n"
        'run = "runs/main"\n\n'
        "[tool.modelkit.models]\n"
        f'"{adoption.model_name}" = "{adoption.model_ref}"\n\n'
        "[tool.modelkit.defaults]\n"
        f'model = "{adoption.model_name}"\n'
    )
