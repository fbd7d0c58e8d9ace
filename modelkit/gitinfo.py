"""Git facts about the project being trained (commit + dirty flag)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    """Run git and return stripped stdout (raises CalledProcessError when check)."""
    out = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=check, timeout=60
    )
    return out.stdout.strip()


def git_info(path: Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "branch", "root"}`` for the repo at ``path``; nulls outside git."""
    try:
        root = git("rev-parse", "--show-toplevel", cwd=path)
    except (subprocess.CalledProcessError, FileNotFoundError, OSError):
        return {"commit": None, "dirty": None, "branch": None, "root": None}
    try:
        commit = git("rev-parse", "HEAD", cwd=path)
    except subprocess.CalledProcessError:
        commit = None  # a repo with no commits yet
    status = git("status", "--porcelain", "--untracked-files=no", cwd=path, check=False)
    branch = git("rev-parse", "--abbrev-ref", "HEAD", cwd=path, check=False) or None
    return {"commit": commit, "dirty": bool(status), "branch": branch, "root": root}
