"""Trust boundaries of a release: which files may leave a run, which paths may be written.

Two rules, each one function:

* :func:`run_member` -- a file released from a run is a *regular file that lives inside the
  run*: no component of its path is a symlink, it resolves inside the run's resolved root, and
  it is opened with ``O_NOFOLLOW`` (a link swapped in after the check is refused by the kernel);
* :func:`check_relpath` -- every path read from a manifest, an index or a registry ref is a
  plain relative POSIX path (no ``..``, no absolute path, no drive, no backslash, no control
  character) before anything is written under it; :func:`inside` joins it under a root and
  checks the result once more after resolving.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from modelkit.errors import UnsafeManifestPath, UnsafeRunFile

MAX_PATH = 1024  # bytes, as UTF-8
MAX_PART = 255  # one component, as UTF-8 (the common file system limit)


def _path_problem(name: object) -> str | None:
    """Why ``name`` is not a safe relative path, or None when it is."""
    if not isinstance(name, str) or not name:
        return "is not a non-empty string"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "contains a control character"
    if "\\" in name or ":" in name:
        return "contains a backslash or a colon"
    if name.startswith("/"):
        return "is absolute"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if len(encoded) > MAX_PATH:
        return f"is longer than {MAX_PATH} bytes"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' component"
    if any(len(p.encode("utf-8")) > MAX_PART for p in parts):
        return f"has a component longer than {MAX_PART} bytes"
    return None


def check_relpath(name: object, *, source: str) -> str:
    """``name`` when it is a plain relative POSIX path; :class:`UnsafeManifestPath` otherwise."""
    problem = _path_problem(name)
    if problem is not None:
        raise UnsafeManifestPath(source, path=repr(name)[:120], problem=problem)
    return str(name)


def inside(root: Path, name: str, *, source: str) -> Path:
    """``root / name`` after :func:`check_relpath`, checked again once resolved (a symlinked
    folder inside ``root`` cannot carry a write outside it)."""
    rel = check_relpath(name, source=source)
    base = Path(root).resolve()
    target = (base / PurePosixPath(rel)).resolve()
    if not target.is_relative_to(base):
        raise UnsafeManifestPath(source, path=rel, problem=f"resolves outside {base}")
    return base / PurePosixPath(rel)


def run_member(run_dir: Path, rel: str) -> Path:
    """``run_dir / rel`` when it is a regular file inside the run reached through no symlink;
    :class:`UnsafeRunFile` naming it otherwise."""
    problem = _path_problem(rel)
    if problem is not None:
        raise UnsafeRunFile(run_dir, file=str(rel), problem=f"its name {problem}")
    root = Path(run_dir).resolve()
    here = root
    for part in PurePosixPath(rel).parts:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except OSError as exc:
            raise UnsafeRunFile(
                run_dir, file=rel, problem=f"cannot be read ({exc.strerror})"
            ) from None
        if stat.S_ISLNK(mode):
            raise UnsafeRunFile(run_dir, file=rel, problem="is (or lies under) a symbolic link")
    if not stat.S_ISREG(mode):
        raise UnsafeRunFile(run_dir, file=rel, problem="is not a regular file")
    if not here.resolve().is_relative_to(root):  # pragma: no cover - no link was followed
        raise UnsafeRunFile(run_dir, file=rel, problem="resolves outside the run")
    return here


def open_nofollow(path: Path) -> BinaryIO:
    """Open ``path`` for reading, refusing a symbolic link at its last component."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    return os.fdopen(fd, "rb")
