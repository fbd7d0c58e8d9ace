"""Save a model's weights in the Hub's layout (one file, or shards + index), atomically.

:func:`save_model_weights` splits with huggingface_hub's ``save_torch_state_dict`` (which uses
``split_torch_state_dict_into_shards``; shards above ``max_shard_size``, default the Hub's
``"5GB"``) and stores shared (tied) tensors once: huggingface_hub drops all names of a shared
storage but one and records ``dropped -> kept`` in the metadata; the result names both. Headers
are rewritten with sorted keys and the index as sorted JSON, and no path or config goes into a
file, so equal tensors give equal bytes.

Atomic: everything is written and fsynced in a temp folder inside ``directory``, then moved in
with the layout's entry file (``model.safetensors`` or the index) last, after the previous
layout's entry file was removed first. A crash in between leaves shards without an entry file,
which :func:`~modelkit.weights.layout.read_layout` refuses by name: a half-written or mixed set
is never read as weights.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.errors import InvalidArgument
from modelkit.io import fsync_dir
from modelkit.weights.hashing import hash_layout
from modelkit.weights.layout import INDEX, SINGLE, WeightsLayout, read_layout, weights_files_in
from modelkit.weights.record import WeightsRecord

DEFAULT_MAX_SHARD_SIZE = "5GB"  # huggingface_hub's (and transformers') default


@dataclass(frozen=True)
class SavedWeights:
    """What :func:`save_model_weights` wrote: the facts run.json records about the weights."""

    weights_sha256: str
    layout: str  # "single" | "sharded"
    files: dict[str, str]  # file name -> sha256 (shards and index)
    total_size: int  # bytes of tensor data
    index: str | None = None
    shared_tensors: dict[str, str] = field(default_factory=dict)  # dropped -> kept
    largest_file: int = 0

    def record(self) -> dict[str, Any]:
        """The run.json fields: ``weights_sha256`` and the ``weights`` object."""
        return WeightsRecord.from_saved(self).to_fields()


def _state_dict(obj: Any) -> dict[str, Any]:
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    raise InvalidArgument("module_or_state_dict", obj, "an nn.Module or a dict of tensors")


def parse_shard_size(value: int | str | None) -> int:
    """``max_shard_size`` in bytes: an int > 0 (or its digits) or a size like ``"5GB"`` /
    ``"200MB"`` (powers of ten, as huggingface_hub reads them); None is the Hub's default."""
    from huggingface_hub.serialization._base import parse_size_to_int

    expected = "a positive number of bytes or a size like '5GB', '200MB', '10KB'"
    if value is None:
        value = DEFAULT_MAX_SHARD_SIZE
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidArgument("max_shard_size", value, expected)
    try:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        size = value if isinstance(value, int) else parse_size_to_int(value)
    except ValueError:
        raise InvalidArgument("max_shard_size", value, expected) from None
    if size <= 0:
        raise InvalidArgument("max_shard_size", value, expected)
    return size


def save_model_weights(
    module_or_state_dict: Any, directory: Path | str, *, max_shard_size: int | str | None = None
) -> SavedWeights:
    """Save weights into ``directory`` (one file, or shards above ``max_shard_size``); returns
    what run.json records. Shared tensors are stored once; the write is atomic (module doc)."""
    from huggingface_hub import save_torch_state_dict

    state = _state_dict(module_or_state_dict)
    limit = parse_shard_size(max_shard_size)
    return write_weights_folder(
        directory, lambda tmp: save_torch_state_dict(state, tmp, max_shard_size=limit, metadata={})
    )


def write_weights_folder(directory: Path | str, write: Callable[[Path], None]) -> SavedWeights:
    """Run ``write(tmp)`` (it writes a layout as huggingface_hub does into the temp folder
    ``tmp`` inside ``directory``), canonicalise and hash it, then move it in (module doc)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".weights-", suffix=".tmp", dir=target))
    try:
        write(tmp)
        _canonicalise(tmp)
        layout = read_layout(tmp)
        digest, files = hash_layout(layout)
        _commit(tmp, target, layout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SavedWeights(
        weights_sha256=digest,
        layout=layout.kind,
        files=files,
        total_size=layout.total_size,
        index=layout.index,
        shared_tensors=dict(layout.shared),
        largest_file=layout.largest_file,
    )


def _canonicalise(folder: Path) -> None:
    """Sorted-key headers and a sorted-key index; every file fsynced."""
    for p in sorted(folder.iterdir()):
        if p.name == INDEX:
            index = json.loads(p.read_text(encoding="utf-8"))
            p.write_text(json.dumps(index, sort_keys=True, indent=2) + "\n", encoding="utf-8")
        else:
            canonicalise_header(p)
        with open(p, "rb+") as f:
            os.fsync(f.fileno())


def canonicalise_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys, in place (same length).

    safetensors serialises ``__metadata__`` from a hash map, so its key order (and the file's
    sha256) changes from process to process; sorted keys make equal weights equal files.
    """
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(body) > size:  # cannot happen for the same content; keep the original then
            return
        f.seek(8)
        f.write(body + b" " * (size - len(body)))


def _commit(tmp: Path, target: Path, layout: WeightsLayout) -> None:
    """Move the new layout in: the old index (and, for shards, the old single file) out first,
    stale shards next, the new shards, then the new entry file last (atomic per file)."""
    entry = layout.index or SINGLE
    old = weights_files_in(target)
    first = [n for n in (INDEX, SINGLE) if n in old and (n == INDEX or entry == INDEX)]
    stale = [n for n in old if n not in first and n not in layout.files]
    for name in first + stale:
        (target / name).unlink()
    fsync_dir(target)
    for name in layout.files:
        if name != entry:
            os.replace(tmp / name, target / name)
    fsync_dir(target)
    os.replace(tmp / entry, target / entry)
    fsync_dir(target)
