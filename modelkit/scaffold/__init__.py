"""`modelkit init`: scaffold a new model repository with the maintainer workflow built in.

The templates live in ``modelkit/scaffold/templates/`` (package data). A template path maps to
the generated path by three rules: a leading ``dot-`` becomes ``.`` (so ``dot-github`` is
``.github``), a ``__package__`` segment becomes the Python package name, and the ``.tmpl``
suffix is dropped. Inside a template, ``{{key}}`` (no spaces, so GitHub's ``${{ expr }}`` is
left alone) is replaced by the values in :func:`template_values`.

Writing is all-or-nothing: every file is rendered first, then written into a staging
directory beside the target, then moved into place; on any error the files created so far
are removed again. An existing file is never overwritten: with ``force`` it is kept and
reported in :attr:`InitResult.kept`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError
from modelkit.scaffold.adopt import Adoption, adopt_files, find_adoption
from modelkit.scaffold.render import (
    class_name,
    modelkit_requirement,
    package_name,
    render_templates,
    template_values,
    toml_string_content,
    validate_name,
    validate_requirement,
    yaml_string_content,
)
from modelkit.scaffold.write import (
    GitState,
    check_target,
    git_init,
    register_in_pyproject,
    write_files,
)

__all__ = [
    "InitResult",
    "class_name",
    "init_project",
    "modelkit_requirement",
    "package_name",
    "render_templates",
    "template_values",
    "toml_string_content",
    "validate_name",
    "validate_requirement",
    "yaml_string_content",
]


@dataclass(frozen=True)
class InitResult:
    """What :func:`init_project` did."""

    root: Path
    name: str
    package: str
    created: list[str] = field(default_factory=list)  # relative paths written
    kept: list[str] = field(default_factory=list)  # existing files left untouched (--force)
    git: GitState = field(default_factory=GitState)
    adopted: Adoption | None = None  # init --force: the repository's own model/script

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "root": str(self.root),
            "name": self.name,
            "package": self.package,
            "created": list(self.created),
            "kept": list(self.kept),
            "git": self.git.to_dict(),
            "adopted": self.adopted.to_dict() if self.adopted is not None else None,
        }


def init_project(
    path: Path | str,
    *,
    name: str | None = None,
    force: bool = False,
    git: bool = True,
    requirement: str | None = None,
    model: str | None = None,
    script: str | None = None,
) -> InitResult:
    """Scaffold a model repository at ``path``; returns what was created and kept.

    With ``force`` on an existing repository that defines a model (or given ``model``,
    "module:attr"), that model and its training script are registered instead of the
    template model (see :mod:`modelkit.scaffold.adopt`).
    """
    root = Path(path).expanduser().absolute()
    name = name or root.name
    package = validate_name(name)
    if requirement is not None:
        validate_requirement(requirement)
    check_target(root, force=force)
    files = render_templates(template_values(name, package=package, requirement=requirement))
    adoption, files = _adopt(root, files, name=name, package=package, model=model, script=script)

    existed = root.exists()
    kept = sorted(rel for rel in files if (root / rel).exists() or (root / rel).is_symlink())
    for rel in kept:
        if (root / rel).is_dir():
            raise BadInputError(
                f"{root / rel} is a directory where the scaffold puts a file",
                hint="move it away, or choose another PATH",
            )
    for rel in files:
        for parent in Path(rel).parents:
            if parent != Path(".") and (root / parent).exists() and not (root / parent).is_dir():
                raise BadInputError(
                    f"{root / parent} is a file where the scaffold puts a directory",
                    hint="move it away, or choose another PATH",
                )
    to_write = {rel: text for rel, text in files.items() if rel not in kept}

    write_files(root, to_write, existed=existed)

    if adoption is not None and "pyproject.toml" in kept:
        register_in_pyproject(root / "pyproject.toml", adoption)
    git_state = (
        git_init(root, files=sorted(to_write)) if git else GitState(note="--no-git: git left alone")
    )
    return InitResult(
        root=root,
        name=name,
        package=package,
        created=sorted(to_write),
        kept=kept,
        git=git_state,
        adopted=adoption,
    )


def _adopt(
    root: Path,
    files: dict[str, str],
    *,
    name: str,
    package: str,
    model: str | None,
    script: str | None,
) -> tuple[Any, dict[str, str]]:
    """``init --force`` on an existing repository: its model instead of the template's."""

    if model is None and script is None and not (root.is_dir() and any(root.iterdir())):
        return None, files
    adoption = find_adoption(root, name=name, model=model, script=script)
    if adoption is None:
        return None, files
    return adoption, adopt_files(files, adoption, package=package)
