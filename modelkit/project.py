"""The maintainer's project: ``[tool.modelkit]`` in the nearest ``pyproject.toml``.

Example::

    [tool.modelkit]
    run = "runs/main"                 # the run that `card`/`release` use by default
    hub = "hf://my-org/my-model"      # default release target
    [tool.modelkit.models]
    tiny-net = "my_pkg.models:tiny_net"      # name -> package.module:factory
    [tool.modelkit.datasets]
    toy = "my_pkg.data:load_toy"             # name -> callable returning a Dataset
    [tool.modelkit.datasets.cifar]           # or a table: the loader and its keyword arguments
    loader = "my_pkg.data:load_cifar"
    path = "data/cifar"
    [tool.modelkit.defaults]
    model = "tiny-net"
    data = "toy"
    epochs = 3
    [tool.modelkit.benchmark]        # read by `modelkit benchmark`
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.config import read_text_file, tomllib
from modelkit.errors import ConfigError
from modelkit.models.imports import import_object as import_object  # re-exported
from modelkit.validation import check_finite, validate_fields


@dataclass(frozen=True)
class Project:
    """What ``[tool.modelkit]`` declares; only the root when the table is absent, and an empty
    project (no root) when there is no pyproject.toml."""

    root: Path | None = None
    models: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, str | dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    run: str | None = None
    hub: str | None = None
    benchmark: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def activate(self) -> None:
        """Make the project's own packages importable (root and root/src on sys.path)."""
        if self.root is None:
            return
        for p in (self.root / "src", self.root):
            s = str(p)
            if p.is_dir() and s not in sys.path:
                sys.path.insert(0, s)


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (default: cwd)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


TABLE_KEYS = ("models", "datasets", "defaults", "run", "hub", "benchmark")


def validate_project_table(table: dict[str, Any], *, source: str) -> None:
    """Check ``[tool.modelkit]`` by the types of :class:`Project`'s fields, and its
    ``defaults`` by :class:`~modelkit.config.TrainConfig`'s (keys, types and ranges)."""
    from modelkit.config import validate_train_mapping

    validate_fields(Project, table, source=source, keys=TABLE_KEYS)
    check_finite(table, source=source)  # NaN/inf anywhere (e.g. benchmark.threshold) is a typo
    defaults = table.get("defaults")
    if defaults:
        from modelkit.config import normalise_keys

        validate_train_mapping(normalise_keys(defaults), source=f"{source[:-1]}.defaults]")


def load_project(start: Path | None = None) -> Project:
    """Load ``[tool.modelkit]`` from the nearest pyproject.toml and activate it."""
    path = find_pyproject(start)
    if path is None:
        return Project()
    text = read_text_file(path, what="project file")
    try:
        data = tomllib.loads(text)
    except Exception as exc:
        raise ConfigError(f"cannot parse {path}: {exc}", hint="fix the TOML syntax") from None
    table = data.get("tool", {}).get("modelkit")
    if table is None:  # a repository that has not configured modelkit: still its root
        project = Project(root=path.parent)  # (license, MODEL_CARD.md, registry/, imports)
        project.activate()
        return project
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.modelkit] must be a table", hint="see the README")
    validate_project_table(table, source=f"{path} [tool.modelkit]")
    project = Project(
        root=path.parent,
        models={str(k): str(v) for k, v in table.get("models", {}).items()},
        datasets=_datasets(path, table.get("datasets", {})),
        defaults=dict(table.get("defaults", {})),
        run=table.get("run"),
        hub=table.get("hub"),
        benchmark=dict(table.get("benchmark", {})),
        raw=table,
    )
    project.activate()
    return project


def _datasets(path: Path, table: dict[str, Any]) -> dict[str, str | dict[str, Any]]:
    """``name = "pkg.mod:loader"`` or ``[tool.modelkit.datasets.NAME]`` with ``loader = ...``."""
    out: dict[str, str | dict[str, Any]] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            if not isinstance(value.get("loader"), str):
                raise ConfigError(
                    f'{path}: [tool.modelkit.datasets.{name}] needs loader = "pkg.module:function"',
                    hint="the other keys are the loader's keyword arguments",
                )
            out[str(name)] = {str(k): v for k, v in value.items()}
        else:
            out[str(name)] = str(value)
    return out
