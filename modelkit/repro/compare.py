"""Tensor comparisons for reproducibility: max abs diff, max ULP distance, what differs."""

from __future__ import annotations

import numpy as np
import torch

from modelkit.repro.records import compare_metrics, fingerprints, first_divergence
from modelkit.repro.report import TensorDiff

__all__ = [
    "compare_metrics",
    "diff_states",
    "fingerprints",
    "first_divergence",
    "max_ulp",
    "tensor_diff",
]


_UNSIGNED = {
    torch.float64: (np.uint64, 64),
    torch.float32: (np.uint32, 32),
    torch.float16: (np.uint16, 16),
    torch.bfloat16: (np.uint16, 16),
}
_SIGNED_VIEW = {torch.float64: torch.int64, torch.float32: torch.int32}


def _ordered_bits(t: torch.Tensor) -> np.ndarray:
    """Float bits mapped to unsigned ints whose order is the float order (for ULP distance)."""
    utype, bits = _UNSIGNED[t.dtype]
    view = _SIGNED_VIEW.get(t.dtype, torch.int16)
    u = t.detach().cpu().contiguous().view(view).numpy().view(utype)
    top = utype(1) << utype(bits - 1)
    return np.where(u & top, ~u, u | top)


def max_ulp(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between ``a`` and ``b`` (same dtype/shape)."""
    if a.numel() == 0:
        return 0
    if a.dtype in _UNSIGNED:
        ka, kb = _ordered_bits(a), _ordered_bits(b)
        return int(np.max(np.where(ka > kb, ka - kb, kb - ka)))
    return (
        int((a.to(torch.int64) - b.to(torch.int64)).abs().max())
        if a.dtype != torch.bool
        else int((a != b).any())
    )


def tensor_diff(name: str, a: torch.Tensor | None, b: torch.Tensor | None) -> TensorDiff | None:
    """None when bitwise equal, else name, max abs diff, max ULP distance and count differing."""
    if a is None or b is None:
        return TensorDiff(name=name, problem="missing in " + ("first" if a is None else "second"))
    if a.shape != b.shape or a.dtype != b.dtype:
        return TensorDiff(
            name=name,
            problem=f"shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}",
        )
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.dtype in _UNSIGNED:
        differ = _ordered_bits(a) != _ordered_bits(b)
        count = int(differ.sum())
    else:
        count = int((a != b).sum())
    if count == 0:
        return None
    abs_diff = (a.double() - b.double()).abs()
    return TensorDiff(
        name=name,
        max_abs_diff=float(abs_diff.max()) if abs_diff.numel() else 0.0,
        max_ulp=max_ulp(a, b),
        elements_differ=count,
        numel=a.numel(),
    )


def diff_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[TensorDiff]:
    """Every tensor that differs between two flat states (sorted by name)."""
    out = []
    for name in sorted(set(a) | set(b)):
        d = tensor_diff(name, a.get(name), b.get(name))
        if d is not None:
            out.append(d)
    return out
