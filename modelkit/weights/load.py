"""Load weights into a model built on the ``meta`` device, one shard at a time.

::

    with empty_parameters():            # parameters on "meta": no memory, no random init
        model = Net(**kwargs)
    load_weights(model, read_layout("runs/big"), name="Net")

Peak memory is the model's real tensors plus one shard: each shard's tensors are read with
plain file reads (no mmap, whose pages would count twice) and assigned to the model with
``load_state_dict(..., assign=True)``. Shared (tied) tensors stored once are restored: names
the model itself ties (the same parameter under two names) and names the files record as
dropped point at the stored tensor again, then ``model.tie_weights()`` runs where it exists.
Key checking is strict and typed (:class:`~modelkit.errors.WeightsMismatch`), from the
headers, before any tensor is read. A load that only checks (``keep=False``: a release's
load check, after the files' hashes matched) builds each tensor on a copy-on-write mapping of
its file instead (:func:`map_tensors`): the same tensors, assigned the same way, without
reading or holding their bytes.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelkit.errors import WeightsLayoutError, WeightsMismatch
from modelkit.weights.layout import FileHeader, WeightsLayout

_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2", "C64": "complex64",
}  # fmt: skip


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: ~15% faster than faulting page by page
_PATCH = threading.Lock()  # guards _STATE: how many threads are inside, the original method


class _Patched:
    """How many threads are inside :func:`empty_parameters`, and the method it replaced."""

    users = 0
    original: Any = None


_STATE = _Patched()
_INSIDE = threading.local()  # this thread's depth of empty_parameters() blocks


def _register_on_meta(module: Any, name: str, param: Any) -> None:
    """``nn.Module.register_parameter`` while a thread is inside :func:`empty_parameters`:
    the parameter moves to ``meta`` for that thread only (others get the original)."""
    _STATE.original(module, name, param)
    if getattr(_INSIDE, "depth", 0) and param is not None and param.device.type != "meta":
        kept = module._parameters[name]
        extra = dict(kept.__dict__)
        extra["requires_grad"] = param.requires_grad
        module._parameters[name] = type(kept)(kept.to("meta"), **extra)


@contextlib.contextmanager
def empty_parameters() -> Iterator[None]:
    """Build models inside this block with their parameters on ``meta`` (buffers stay real,
    as accelerate's ``init_empty_weights(include_buffers=False)`` does); thread-safe."""
    import torch

    with _PATCH:  # installed once while any thread is inside: a plain save-and-restore of the
        if _STATE.users == 0:  # method leaks the patch when two threads' blocks overlap
            _STATE.original = torch.nn.Module.register_parameter
            torch.nn.Module.register_parameter = _register_on_meta  # type: ignore[method-assign]
        _STATE.users += 1
    _INSIDE.depth = getattr(_INSIDE, "depth", 0) + 1
    try:
        yield
    finally:
        _INSIDE.depth -= 1
        with _PATCH:
            _STATE.users -= 1
            if _STATE.users == 0:
                torch.nn.Module.register_parameter = _STATE.original  # type: ignore[method-assign]


def torch_dtype(code: str) -> Any:
    """The torch dtype of a safetensors dtype code (``F32`` -> ``torch.float32``)."""
    import torch

    name = _DTYPES.get(code)
    dtype = getattr(torch, name, None) if name else None
    if dtype is None:
        raise ValueError(f"dtype {code} is not supported by this torch")
    return dtype


def _buffer(nbytes: int) -> Any:
    """A fresh uint8 CPU tensor of ``nbytes`` in its own anonymous mapping: freed memory goes
    back to the OS at once (malloc keeps freed chunks below 32 MiB, so shard after shard
    the process would grow to the whole model's size)."""
    import torch

    if nbytes == 0:
        return torch.empty(0, dtype=torch.uint8)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _POPULATE  # pages faulted in at once
    return torch.frombuffer(mmap.mmap(-1, nbytes, flags=flags), dtype=torch.uint8)


def read_tensors(path: Path, header: FileHeader) -> dict[str, Any]:
    """Every tensor of one safetensors file, read with plain reads into fresh CPU tensors."""
    out: dict[str, Any] = {}
    with open(path, "rb", buffering=0) as f:
        for name, t in sorted(header.tensors.items(), key=lambda kv: kv[1].start):
            try:
                dtype = torch_dtype(t.dtype)
            except ValueError as exc:
                raise WeightsLayoutError(path.parent, file=path.name, problem=str(exc)) from None
            buf = _buffer(t.nbytes)
            view = memoryview(buf.numpy())
            f.seek(t.start)
            got = 0
            while got < t.nbytes:
                n = f.readinto(view[got:])
                if not n:
                    problem = f"ends inside tensor '{name}'"
                    raise WeightsLayoutError(path.parent, file=path.name, problem=problem)
                got += n
            out[name] = buf.view(dtype).reshape(t.shape)
    return out


def map_tensors(path: Path, header: FileHeader) -> dict[str, Any]:
    """Every tensor of one safetensors file as a view of a private (copy-on-write) mapping of
    the file, for a load that only checks: nothing is read, and no memory is used, until a
    tensor's bytes are touched (a load with ``assign=True`` touches none). A tensor whose
    offset does not suit its dtype's alignment is copied (its bytes only)."""
    import torch

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size != header.size:
            problem = f"changed size since its header was read ({header.size} bytes)"
            raise WeightsLayoutError(path.parent, file=path.name, problem=problem)
        whole = torch.frombuffer(
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY), dtype=torch.uint8
        )
    out: dict[str, Any] = {}
    for name, t in sorted(header.tensors.items(), key=lambda kv: kv[1].start):
        try:
            dtype = torch_dtype(t.dtype)
        except ValueError as exc:
            raise WeightsLayoutError(path.parent, file=path.name, problem=str(exc)) from None
        part = whole[t.start : t.end]
        if t.start % dtype.itemsize:
            part = part.clone()  # a view must start at a multiple of the element size
        out[name] = part.view(dtype).reshape(t.shape)
    return out


def _alias_groups(state: dict[str, Any]) -> list[list[str]]:
    """Names of the model's state that are one tensor (tied in the model itself)."""
    groups: dict[int, list[str]] = {}
    for name, tensor in state.items():
        groups.setdefault(id(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def plan_load(model: Any, layout: WeightsLayout, *, name: str) -> dict[str, str]:
    """Check keys and shapes from the headers (strict); returns ``{name: stored name}`` for
    the model's names restored from a shared tensor. Raises :class:`WeightsMismatch`."""
    state = model.state_dict(keep_vars=True)
    stored = {k: t for h in layout.headers for k, t in h.tensors.items()}
    restore: dict[str, str] = {}
    for group in _alias_groups(state):
        present = [n for n in group if n in stored]
        restore.update({n: present[0] for n in group if present and n not in stored})
    for dropped, kept in layout.shared.items():
        if dropped in state and dropped not in stored:
            restore[dropped] = kept
    missing = [k for k in state if k not in stored and k not in restore]
    unexpected = [k for k in stored if k not in state]
    shapes = [
        f"{k}: stored {list(t.shape)} vs model {list(state[k].shape)}"
        for k, t in sorted(stored.items())
        if k in state and tuple(state[k].shape) != t.shape
    ]
    if missing or unexpected or shapes:
        raise WeightsMismatch(name, missing=missing, unexpected=unexpected, shapes=shapes)
    return restore


def _restore_shared(model: Any, restore: dict[str, str]) -> None:
    """Point each restored name at the stored tensor it shares, then ``tie_weights()``."""
    import torch

    for name, source in sorted(restore.items()):
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        src_owner, _, src_leaf = source.rpartition(".")
        tensor = getattr(model.get_submodule(src_owner), src_leaf)
        if isinstance(tensor, torch.nn.Parameter):
            owner.register_parameter(leaf, tensor)
        else:
            owner._buffers[leaf] = tensor
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()


def load_weights(
    model: Any, layout: WeightsLayout, *, name: str, device: Any = "cpu", keep: bool = True
) -> Any:
    """Load ``layout`` into ``model`` (built with :func:`empty_parameters`) shard by shard,
    strict; ``keep=False`` only checks: each shard is loaded from a mapping of its file
    (:func:`map_tensors`: no tensor byte is read; the caller checked the files' hashes),
    then dropped again."""
    restore = plan_load(model, layout, name=name)
    read = read_tensors if keep else map_tensors  # a check maps the files: nothing is read
    for header in layout.headers:
        state = read(layout.path(header.name), header)
        if str(device) != "cpu":
            state = {k: v.to(device) for k, v in state.items()}
        model.load_state_dict(state, strict=False, assign=True)
        del state
        if not keep:
            model.to("meta")
    if not keep:
        return model
    _restore_shared(model, restore)
    left = [n for n, p in model.named_parameters(remove_duplicate=False) if p.is_meta]
    if left:
        raise WeightsMismatch(name, missing=left)
    return model.to(device)


def read_state_dict(layout: WeightsLayout) -> dict[str, Any]:
    """Every stored tensor of the layout, as one ``{name: tensor}`` (all shards in memory)."""
    state: dict[str, Any] = {}
    for header in layout.headers:
        state.update(read_tensors(layout.path(header.name), header))
    return state
