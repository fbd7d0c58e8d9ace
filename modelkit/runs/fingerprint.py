"""Bitwise fingerprints of training state: per-step hashes and the final state digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import torch


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of ``t`` (moved to CPU, contiguous), without a copy where possible."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return memoryview(t.numpy()).cast("B")


def hash_tensors(items: Iterable[tuple[str, torch.Tensor]], h: Any = None) -> Any:
    """Feed ``(name, tensor)`` pairs (name, shape, dtype, bytes) into a sha256 and return it."""
    h = h or hashlib.sha256()
    for name, t in items:
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(tensor_bytes(t))
    return h


def step_fingerprint(model: torch.nn.Module, loss: torch.Tensor | None) -> str:
    """sha256 of every parameter and buffer (state_dict order) plus the step's loss bits."""
    h = hash_tensors(model.state_dict().items())
    if loss is not None:
        h.update(b"loss|")
        h.update(tensor_bytes(loss.detach().float()))
    return h.hexdigest()


def state_digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> str:
    """sha256 of a flat state (sorted tensor names) plus canonical JSON ``meta`` (optimizer etc.)."""
    h = hash_tensors((k, tensors[k]) for k in sorted(tensors))
    if meta:
        h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()
