"""The weights layout of a directory, read from the files' headers and checked for agreement.

A directory holds one of two layouts (the Hugging Face convention):

- ``single``: ``model.safetensors``;
- ``sharded``: ``model.safetensors.index.json`` (``weight_map``: tensor -> shard,
  ``metadata.total_size``: the tensors' bytes) + ``model-0000k-of-0000n.safetensors``.

:func:`read_layout` reads only headers (never tensor data) and checks that the index and the
shards agree: every tensor mapped once and present in the shard the map names, no missing or
extra shard, standard shard names, ``total_size`` equal to the tensors' bytes, every header
valid. Each problem is a typed error naming the file (exit 2).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.errors import (
    NoWeights,
    RunDirError,
    ShardMissing,
    UnexpectedShard,
    WeightsLayoutError,
)
from modelkit.validation import check_safetensors_header

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
SHARD_RE = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")
WEIGHTS_FILE_RE = re.compile(r"^model[-.].*safetensors(\.index\.json)?$")
MAX_HEADER = 100 << 20  # safetensors' own limit on a header's length
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file: dtype, shape, and its bytes' absolute file offsets."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class FileHeader:
    """A safetensors file's header: its metadata and tensors (name -> :class:`TensorInfo`)."""

    name: str
    size: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    data_start: int  # 8 + the header's length: where tensor data begins

    @property
    def format(self) -> str | None:
        """The ``format`` its safetensors metadata names (``pt``; None when it names none)."""
        return self.metadata.get("format")


@dataclass(frozen=True)
class WeightsLayout:
    """The checked weights of a directory (see the module docstring)."""

    directory: Path
    kind: str  # "single" | "sharded"
    headers: tuple[FileHeader, ...]  # the safetensors files, in name order
    weight_map: dict[str, str]  # tensor name -> file name
    total_size: int  # bytes of tensor data, all files
    shared: dict[str, str]  # a shared tensor's dropped name -> the name it is stored under
    index: str | None = None  # the index file's name (sharded)

    @property
    def files(self) -> list[str]:
        """Every file of the layout: the safetensors files, then the index (sharded)."""
        return [h.name for h in self.headers] + ([self.index] if self.index else [])

    def path(self, name: str) -> Path:
        """The path of one of the layout's files."""
        return self.directory / name

    @property
    def largest_file(self) -> int:
        """The size of the largest safetensors file, in bytes."""
        return max(h.size for h in self.headers)


def has_weights(directory: Path | str) -> bool:
    """Whether ``directory`` holds either layout's entry file (not checked)."""
    d = Path(directory)
    return (d / SINGLE).is_file() or (d / INDEX).is_file()


def weights_files_in(directory: Path) -> list[str]:
    """The names in ``directory`` that look like weights files of either layout."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if WEIGHTS_FILE_RE.match(p.name))


def read_layout(directory: Path | str) -> WeightsLayout:
    """The checked layout of ``directory`` (headers only); typed errors name the bad file."""
    d = Path(directory)
    present = weights_files_in(d)
    if INDEX in present and SINGLE in present:
        raise WeightsLayoutError(
            d, file=SINGLE, problem=f"both {SINGLE} and {INDEX} are present; which is meant?"
        )
    if INDEX in present:
        return _read_sharded(d, present)
    if SINGLE in present:
        for name in present:
            if name != SINGLE:
                raise UnexpectedShard(d, file=name, layout=f"the weights are {SINGLE}")
        header = read_header(d / SINGLE, directory=d)
        shared = _shared(header.metadata, header.tensors)
        weight_map = {name: SINGLE for name in header.tensors}
        total = sum(t.nbytes for t in header.tensors.values())
        return WeightsLayout(d, "single", (header,), weight_map, total, shared)
    if present:  # shards without their index: never guess which set is meant
        raise UnexpectedShard(d, file=present[0], layout=f"there is no {INDEX}")
    raise NoWeights(d)


def read_header(path: Path, *, directory: Path | None = None) -> FileHeader:
    """Parse and check one safetensors header (a damaged file is named; nothing is loaded)."""
    d = directory if directory is not None else path.parent
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, MAX_HEADER):
                raise ValueError(f"header length {n} is larger than the file")
            header = json.loads(f.read(n))
        check_safetensors_header(header, path=path.name, error=RunDirError)
    except FileNotFoundError:
        raise ShardMissing(d, file=path.name) from None
    except (OSError, ValueError, RunDirError) as exc:
        problem = getattr(exc, "message", None) or str(exc)
        raise WeightsLayoutError(
            d, file=path.name, problem=f"not a valid safetensors file: {problem}"
        ) from None
    meta = header.pop("__metadata__", None) or {}
    start = 8 + n
    tensors = {
        name: TensorInfo(e["dtype"], tuple(e["shape"]), start + e["data_offsets"][0],
                         start + e["data_offsets"][1])
        for name, e in sorted(header.items())
    }  # fmt: skip
    _check_offsets(tensors, start=start, size=size, where=(d, path.name))
    return FileHeader(path.name, size, dict(meta), tensors, start)


def _check_offsets(tensors: dict[str, TensorInfo], *, start: int, size: int, where: Any) -> None:
    """Tensor data must tile the file after the header: sized by dtype x shape, no gap, no overlap."""
    pos = start
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        per = DTYPE_BYTES.get(t.dtype)
        if per is not None and t.nbytes != per * t.numel:
            problem = f"tensor '{name}' holds {t.nbytes} bytes, {t.dtype}{list(t.shape)} needs"
            raise WeightsLayoutError(where[0], file=where[1], problem=f"{problem} {per * t.numel}")
        if t.start != pos:
            raise WeightsLayoutError(
                where[0], file=where[1], problem=f"tensor '{name}' data does not follow the last"
            )
        pos = t.end
    if pos != size:
        raise WeightsLayoutError(
            where[0],
            file=where[1],
            problem=f"truncated or padded: the header describes {pos} bytes, the file has {size}",
        )


def _shared(metadata: dict[str, Any], stored: Any) -> dict[str, str]:
    """``{dropped name: stored name}`` from metadata (huggingface_hub records each dropped
    shared tensor as ``metadata[dropped] = kept``)."""
    return {
        k: v
        for k, v in sorted(metadata.items())
        if isinstance(v, str) and v in stored and k not in stored
    }


def _read_index(d: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The index's ``weight_map`` and ``metadata``, type-checked."""
    path = d / INDEX
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WeightsLayoutError(d, file=INDEX, problem=f"not a JSON index: {exc}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    meta = data.get("metadata", {}) if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsLayoutError(d, file=INDEX, problem="has no 'weight_map' object")
    if not all(isinstance(v, str) for v in weight_map.values()):
        raise WeightsLayoutError(d, file=INDEX, problem="'weight_map' values must be file names")
    if not isinstance(meta, dict) or not _is_size(meta.get("total_size")):
        raise WeightsLayoutError(d, file=INDEX, problem="has no integer 'metadata.total_size'")
    return weight_map, meta


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shard_names(d: Path, weight_map: dict[str, str]) -> list[str]:
    """The shards the index names: standard names, one total, numbers 1..n with none unused."""
    names = sorted(set(weight_map.values()))
    totals = set()
    for name in names:
        m = SHARD_RE.match(name)
        if m is None:
            problem = f"names shard '{name}', not of the form model-0000k-of-0000n.safetensors"
            raise WeightsLayoutError(d, file=INDEX, problem=problem)
        totals.add(int(m.group(2)))
    (n,) = totals if len(totals) == 1 else (0,)
    expected = [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    if names != expected:
        problem = f"names shards {', '.join(names)}; expected {n or 'one total'} numbered 1..n"
        raise WeightsLayoutError(d, file=INDEX, problem=problem)
    return names


def _read_sharded(d: Path, present: list[str]) -> WeightsLayout:
    weight_map, meta = _read_index(d)
    names = _shard_names(d, weight_map)
    for name in names:
        if name not in present:
            raise ShardMissing(d, file=name)
    for name in present:
        if name not in names and name != INDEX:
            raise UnexpectedShard(d, file=name, layout=f"{INDEX} does not name it")
    headers = tuple(read_header(d / name, directory=d) for name in names)
    seen: dict[str, str] = {}
    for h in headers:
        for tensor in h.tensors:
            if tensor in seen:
                problem = f"tensor '{tensor}' is stored twice (also in {seen[tensor]})"
                raise WeightsLayoutError(d, file=h.name, problem=problem)
            seen[tensor] = h.name
            if weight_map.get(tensor) != h.name:
                problem = f"holds '{tensor}', which the index maps to {weight_map.get(tensor)}"
                raise WeightsLayoutError(d, file=h.name, problem=problem)
    for tensor, name in sorted(weight_map.items()):
        if tensor not in seen:
            problem = f"the index maps '{tensor}' to {name}, which does not hold it"
            raise WeightsLayoutError(d, file=name, problem=problem)
    total = sum(t.nbytes for h in headers for t in h.tensors.values())
    if meta["total_size"] != total:
        problem = f"metadata.total_size is {meta['total_size']}, the shards hold {total} bytes"
        raise WeightsLayoutError(d, file=INDEX, problem=problem)
    return WeightsLayout(d, "sharded", headers, dict(weight_map), total, _shared(meta, seen), INDEX)
