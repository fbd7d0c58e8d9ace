"""Shared setup for the card/release/verify tests: one tiny trained run per session, a git project."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from modelkit.project import Project

PROSE = """## Uses

For the release tests only.

## Bias, risks and ethical considerations

Toy data; no known risks.

## Citation and contact

The modelkit maintainers.
"""


def git_project(root: Path, *, license: str = "MIT", prose: bool = True) -> Project:
    """A committed git project at ``root`` (runs/ and registry/ ignored); returns its Project.

    With ``prose``, the project's MODEL_CARD.md holds every hand-written card section.
    """
    root.mkdir(parents=True, exist_ok=True)
    if prose:
        (root / "MODEL_CARD.md").write_text(PROSE)
    (root / ".gitignore").write_text("runs/\nregistry/\n")
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "demo"\nlicense = "{license}"\n\n[tool.modelkit]\n'
    )
    env = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), *env, "commit", "-qm", "init"], check=True)
    return Project(root=root)


def copy_run(
    template: Path, root: Path, name: str = "run", *, project: Project | None = None
) -> Path:
    """Copy the session's run into ``root/runs/name``; re-card it for ``project`` when given."""
    dst = root / "runs" / name
    shutil.copytree(template, dst)
    if project is not None:
        from modelkit.card import write_card

        write_card(dst, project=project)
    return dst
