"""Artifacts a run declares (``run.add_artifact``): tokenizer files, vocabularies, processor
configs, copied into ``artifacts/`` of the run and recorded in run.json (``artifacts``).

Only regular files are taken (a symbolic link, a directory or a device is refused, so a run
never carries content from outside what was declared), under a plain file name; each copy
is atomic (temp file + fsync + rename) and its sha256 and size are recorded.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from modelkit.errors import InvalidArgument
from modelkit.io import atomic_path
from modelkit.runs.record import Artifact

if TYPE_CHECKING:
    from modelkit.runs.layout import RunDir
    from modelkit.runs.record import Artifact

_CHUNK = 1 << 20


def artifact_name(source: Path, name: str | None) -> str:
    """The stored name: ``name`` or the file's own, a plain file name (no folders, no dots
    alone, no control characters)."""
    chosen = source.name if name is None else name
    bad = (
        not isinstance(chosen, str)
        or chosen in ("", ".", "..")
        or "/" in chosen
        or "\\" in chosen
        or any(ord(c) < 32 for c in chosen)
        or chosen.startswith(".")
    )
    if bad:
        raise InvalidArgument(
            "name",
            chosen,
            "a plain file name (no folders, not hidden)",
            hint="pass name='tokenizer.json' or leave name out",
        )
    return chosen


def check_regular_file(source: Path) -> os.stat_result:
    """``source``'s stat when it is a regular file (not followed through a link)."""
    try:
        st = os.lstat(source)
    except OSError as exc:
        raise InvalidArgument(
            "path", str(source), "an existing file", hint=f"{exc.strerror or exc}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise InvalidArgument(
            "path",
            str(source),
            f"a regular file ({source} is {kind})",
            hint="pass the file itself (artifacts are copied, links are never followed)",
        )
    return st


def copy_artifact(source: Path, run: RunDir, name: str) -> Artifact:
    """Copy ``source`` to ``run.artifacts / name`` atomically; returns its record entry."""

    check_regular_file(source)
    run.artifacts.mkdir(exist_ok=True)
    h = hashlib.sha256()
    size = 0
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as src, atomic_path(run.artifacts / name) as tmp:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):  # swapped after the check
            raise InvalidArgument(
                "path", str(source), "a regular file", hint="pass the file itself"
            )
        with open(tmp, "wb") as dst:
            while block := src.read(_CHUNK):
                h.update(block)
                dst.write(block)
                size += len(block)
    rel = f"{run.artifacts.name}/{name}"
    return Artifact(name=name, path=rel, sha256=h.hexdigest(), size=size)
