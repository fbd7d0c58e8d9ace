"""Writing a scaffold: the target checked, files written all-or-nothing through a staging
directory (an existing file is never overwritten), the user's pyproject extended, git."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError
from modelkit.gitinfo import git
from modelkit.io import write_bytes_atomic
from modelkit.scaffold.adopt import pyproject_addition


def check_target(root: Path, *, force: bool) -> None:
    if root.exists() and not root.is_dir():
        raise BadInputError(f"{root} exists and is not a directory", hint="choose another PATH")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise BadInputError(
            f"{root} is not empty",
            hint="choose a new or empty directory, or pass --force to add the scaffold "
            "(existing files are kept, never overwritten)",
        )
    # the nearest existing ancestor must be a writable directory
    probe = root
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise BadInputError(
            f"cannot create {root}: {probe} is a file, not a directory", hint="choose another PATH"
        )
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".modelkit-init-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise BadInputError(
            f"{root} is not writable: {exc.strerror or exc}",
            hint="choose a directory you can write to",
        ) from None


def register_in_pyproject(path: Path, adoption: Any) -> None:
    """Append the [tool.modelkit] registration to the user's pyproject.toml (if it has none)."""

    text = path.read_text(encoding="utf-8")
    if "[tool.modelkit" in text:
        return  # the user's own table: left alone (init reports what it found)
    body = text + ("" if text.endswith("\n") else "\n") + pyproject_addition(adoption)
    write_bytes_atomic(path, body.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclass
class GitState:
    """What ``init`` did with git: a repository initialised, a first commit made, or a note
    saying why not (or what is left to do)."""

    initialised: bool = False
    committed: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"initialised": self.initialised, "committed": self.committed, "note": self.note}


def git_init(root: Path, *, files: list[str]) -> GitState:
    """``git init`` + a first commit of ``files`` (only what init wrote), unless ``root``
    already lies in a git work tree."""

    state = GitState()
    try:
        inside = git("rev-parse", "--is-inside-work-tree", cwd=root, check=False) == "true"
    except (FileNotFoundError, OSError):
        state.note = "git not found: run `git init` yourself"
        return state
    if inside:
        state.note = "already inside a git repository: commit the new files yourself"
        return state
    try:
        git("init", "-q", "-b", "main", cwd=root)
        state.initialised = True
        git("add", "--", *files, cwd=root)
        git("commit", "-q", "-m", "Initial commit: modelkit init", cwd=root)
        state.committed = True
    except subprocess.CalledProcessError as exc:
        first = (exc.stderr or "").strip().splitlines()
        reason = first[0] if first else f"git exited {exc.returncode}"
        if state.initialised:
            state.note = f"files staged but not committed ({reason}); commit them yourself"
        else:
            state.note = f"git init failed ({reason})"
    return state


def write_files(root: Path, to_write: dict[str, str], *, existed: bool) -> None:
    """Write ``to_write`` (relative path -> text) under ``root``, all or nothing: into a
    staging directory, then renamed into place (a new root) or hard-linked file by file (an
    existing root; a link never overwrites). On any error what was created is removed."""
    staging_parent = root.parent if not existed else root
    created_paths: list[Path] = []
    created_dirs: list[Path] = [p for p in reversed(staging_parent.parents) if not p.exists()]
    if not staging_parent.exists():
        created_dirs.append(staging_parent)
    staging: Path | None = None
    try:
        staging_parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".modelkit-init-", dir=staging_parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; root gets the usual mode
        for rel, text in to_write.items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
        if not existed:
            os.rename(staging, root)  # one atomic step: the directory appears complete
        else:
            for rel in to_write:
                dest = root / rel
                missing_dirs = [p for p in reversed(dest.parents) if not p.exists()]
                dest.parent.mkdir(parents=True, exist_ok=True)
                created_dirs.extend(missing_dirs)
                try:
                    os.link(staging / rel, dest)  # fails if dest exists: never overwrites
                except FileExistsError:
                    raise BadInputError(
                        f"{dest} appeared while the scaffold was written", hint="run it again"
                    ) from None
                created_paths.append(dest)
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for p in created_paths:
            p.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for d in sorted(created_dirs, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if still empty
        raise
