"""Streaming hashes of weights: each file's sha256, and the weights' identity.

**The weights' identity** (``weights_sha256``, one definition for both layouts): the sha256 of
the canonical JSON (sorted keys, no spaces) of ``{name: [dtype, shape, sha256 of the tensor's
bytes]}`` over every stored tensor (a shared tensor's dropped name is not stored). It depends
on the tensors only, never on a file's metadata, the run's path or config, or how the tensors
are split into shards: the same tensors saved as one file or as ten shards have the same
identity. Each file's own sha256 (what a release manifest and the Hub's LFS record) is kept
beside it in run.json (``weights.files``), so checking the files checks the identity.

Files are read in fixed-size chunks with one reusable buffer: memory stays a few MiB whatever
the size of the weights. Several files are hashed concurrently (:func:`in_threads`, one
thread per core): ``hashlib`` and file reads release the GIL, so shards hash on every core
(``sha256sum`` uses one), each thread holding one buffer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from modelkit.weights.layout import FileHeader, WeightsLayout, read_layout

CHUNK = 4 << 20  # 4 MiB reads: as fast as sha256sum, a fixed few MiB of memory
IDENTITY = "tensors-sha256-v1"  # the name of the definition above, recorded with it
T = TypeVar("T")
R = TypeVar("R")


def in_threads(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(item) for item in items]``, run concurrently on one thread per core (at most one
    per item); results in order, and the first item's error (in order) is raised."""
    todo = list(items)
    workers = min(len(todo), os.cpu_count() or 1)
    if workers <= 1:
        return [fn(item) for item in todo]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelkit-hash") as pool:
        return list(pool.map(fn, todo))


def hash_file(path: Path, *, chunk: int = CHUNK) -> tuple[str, int]:
    """Streaming ``(sha256 hex, size)`` of a file with one reusable buffer."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def file_hashes(layout: WeightsLayout) -> dict[str, str]:
    """``{file name: sha256}`` for every file of the layout (shards and index), hashed
    concurrently (:func:`in_threads`)."""
    hashes = in_threads(lambda name: hash_file(layout.path(name))[0], layout.files)
    return dict(zip(layout.files, hashes, strict=True))


def identity(tensors: dict[str, tuple[str, list[int], str]]) -> str:
    """The weights' identity from ``{name: (dtype, shape, tensor sha256)}`` (module docstring)."""
    canonical = {k: [d, list(s), h] for k, (d, s, h) in tensors.items()}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _hash_safetensors(path: Path, header: FileHeader) -> tuple[str, dict[str, Any]]:
    """One pass over a safetensors file: its sha256 and each tensor's ``(dtype, shape, sha256)``."""
    whole = hashlib.sha256()
    tensors: dict[str, Any] = {}
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        whole.update(f.read(header.data_start))
        for name, t in sorted(header.tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
            part = hashlib.sha256()
            left = t.nbytes
            while left:
                n = f.readinto(view[: min(left, CHUNK)])
                if not n:
                    raise OSError(f"{path} ended inside tensor '{name}'")
                part.update(view[:n])
                whole.update(view[:n])
                left -= n
            tensors[name] = (t.dtype, list(t.shape), part.hexdigest())
        if f.read(1):
            raise OSError(f"{path} has bytes after its last tensor")
    return whole.hexdigest(), tensors


def hash_layout(layout: WeightsLayout) -> tuple[str, dict[str, str]]:
    """``(weights_sha256, {file: sha256})`` in one read of every file (files concurrently)."""
    files: dict[str, str] = {}
    tensors: dict[str, Any] = {}
    hashed = in_threads(lambda h: _hash_safetensors(layout.path(h.name), h), layout.headers)
    for header, (sha, found) in zip(layout.headers, hashed, strict=True):
        files[header.name] = sha
        tensors.update(found)
    if layout.index is not None:
        files[layout.index] = hash_file(layout.path(layout.index))[0]
    return identity(tensors), files


def weights_sha256(directory: Path | str | WeightsLayout) -> str:
    """The identity of the weights in ``directory`` (either layout; see the module docstring)."""
    layout = directory if isinstance(directory, WeightsLayout) else read_layout(directory)
    return hash_layout(layout)[0]
