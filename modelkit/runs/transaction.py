"""The run directory as a transaction: a staging sibling, a lock naming its pid, one publish.

A run is written in ``<parent>/.<name>.partial/`` under the lock ``<parent>/.<name>.lock``
(``fcntl.flock``; a second writer fails at once naming the holder's pid) and
:func:`publish_run` moves it into place, replacing an old run only at that moment (an atomic
swap where the OS has one). A run path that is a symbolic link is resolved to its target
first (:func:`resolve_run_path`), so the staging directory, the lock and the publish all
live beside the real directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
from pathlib import Path

from modelkit.errors import RunDirError
from modelkit.io import fsync_dir


def resolve_run_path(path: Path | str) -> Path:
    """The absolute run path with every symbolic link resolved (before anything is written).

    A link to a directory becomes that directory (the run is written beside it and replaces
    it); a dangling link, a link loop, or the file system root is refused (exit 2).
    """
    given = Path(os.path.abspath(os.fspath(path)))
    try:
        target = given.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a link loop
        raise RunDirError(
            f"cannot resolve the run path {given}: {exc}", hint="name a directory, not a link loop"
        ) from None
    if given.is_symlink() and not given.exists():
        raise RunDirError(
            f"{given} is a symbolic link to {target}, which does not exist",
            hint="create the link's target directory, or name a directory instead of the link",
        )
    if target.parent == target or not target.name or target.name in (".", ".."):
        raise RunDirError(f"{path} cannot be a run directory", hint="name a directory: runs/exp")
    return target


def staging_path(path: Path) -> Path:
    """Where the run at ``path`` is written until it is finished: ``<parent>/.<name>.partial``."""
    return path.parent / f".{path.name}.partial"


def lock_path(path: Path) -> Path:
    """The writer's lock file for the run at ``path``: ``<parent>/.<name>.lock``."""
    return path.parent / f".{path.name}.lock"


def _old_paths(path: Path) -> list[Path]:
    if not path.parent.is_dir():
        return []
    prefix = f".{path.name}.old-"
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix))


class RunLock:
    """An exclusive, non-blocking ``flock`` on the lock file; the holder's pid is written in it."""

    def __init__(self, path: Path, *, target: Path) -> None:
        import fcntl

        self.path = path
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunDirError(
                    f"{target} is being written by another process (pid {_holder(path)})",
                    hint="wait for that run to finish, or write to another directory",
                ) from None
            # the file may have been unlinked by a releasing holder between open and flock
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self.fd: int | None = fd

    def release(self) -> None:
        """Unlink the lock file, then drop the lock (idempotent)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def is_run_dir(p: Path) -> bool:
    return (p / "run.json").is_file() or (p / "config.json").is_file()


def record_status(p: Path) -> str | None:
    try:
        data = json.loads((p / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("status") if isinstance(data, dict) else None


def check_run_target(path: Path, *, overwrite: bool, resume: bool) -> str:
    """What is at ``path`` now: 'absent' | 'empty' | 'complete' | 'incomplete' (or refuse)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} exists and is not a directory", hint="choose another run path")
    if not path.exists():
        return "absent"
    try:
        empty = not any(path.iterdir())
    except OSError as exc:
        raise RunDirError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check permissions"
        ) from None
    if empty:
        return "empty"
    if not is_run_dir(path):
        raise RunDirError(
            f"{path} exists and is not a modelkit run directory; refusing to replace it",
            hint="choose an empty or new directory",
        )
    status = record_status(path)
    if status == "complete":
        if not overwrite:
            raise RunDirError(
                f"{path} already holds a complete run",
                hint="pass overwrite=True (--overwrite) to replace it once the new run "
                "succeeds, or choose another directory",
            )
        return "complete"
    if not (overwrite or resume):
        raise RunDirError(
            f"{path} holds an unfinished run (status: {status})",
            hint="pass resume=True (--resume) to continue it, or overwrite=True to replace it",
        )
    return "incomplete"


def clean_stale(path: Path, staging: Path) -> list[str]:
    """Undo or finish what a writer killed mid-publish left behind; returns what was removed."""
    removed = []
    for old in _old_paths(path):
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old.name)
        else:  # killed between moving the old run aside and moving the new one in
            os.replace(old, path)
    for directory in (staging, staging / "checkpoints"):
        if directory.is_dir():
            for p in directory.iterdir():
                if p.name.startswith(".") and p.name.endswith(".tmp"):
                    p.unlink(missing_ok=True)
                    removed.append(f"{directory.name}/{p.name}")
    return removed


def publish_run(staging: Path, target: Path) -> None:
    """Move a finished staging directory to ``target``, replacing what is there (atomically
    where the OS can swap two directories; else old aside, new in, old removed)."""
    fsync_dir(staging)
    if target.exists():
        if not any(target.iterdir()):
            target.rmdir()
        elif _exchange(staging, target):  # the new run in place, the old one at staging
            shutil.rmtree(staging)
            fsync_dir(target.parent)
            return
        else:
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(staging, target)
            fsync_dir(target.parent)
            shutil.rmtree(old)
            return
    os.replace(staging, target)
    fsync_dir(target.parent)
