"""Atomic file writes (temp file in the same directory + fsync + rename), and a process exit
that flushes what it wrote without the interpreter's finalisation."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as sorted, indented JSON atomically."""
    write_bytes_atomic(path, (json.dumps(obj, sort_keys=True, indent=2) + "\n").encode())


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    """Streaming sha256 of a file (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def exit_now(code: int) -> None:
    """Exit with ``code`` without the interpreter's finalisation, after what a normal shutdown
    does that matters: atexit handlers and flushing open files. Used where SystemExit is not
    honoured (an excepthook) or where finalisation itself can crash (a torchrun worker)."""
    import atexit
    import gc
    import io
    import warnings

    atexit._run_exitfuncs()
    with warnings.catch_warnings():  # isinstance on every object wakes deprecated-class warnings
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            with contextlib.suppress(Exception):
                if isinstance(obj, io.IOBase) and not obj.closed:
                    obj.flush()
    os._exit(code)
