"""Comparisons for reproducibility: tensors (max abs diff, max ULP), fingerprints, metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# metrics fields that measure time, not results: never compared
TIMING_FIELDS = frozenset({"elapsed_s", "samples_per_second"})

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


def tensor_diff(name: str, a: torch.Tensor | None, b: torch.Tensor | None) -> dict[str, Any] | None:
    """None when bitwise equal, else name, max abs diff, max ULP distance and count differing."""
    if a is None or b is None:
        return {"name": name, "problem": "missing in " + ("first" if a is None else "second")}
    if a.shape != b.shape or a.dtype != b.dtype:
        return {
            "name": name,
            "problem": f"shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}",
        }
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.dtype in _UNSIGNED:
        differ = _ordered_bits(a) != _ordered_bits(b)
        count = int(differ.sum())
    else:
        count = int((a != b).sum())
    if count == 0:
        return None
    abs_diff = (a.double() - b.double()).abs()
    return {
        "name": name,
        "max_abs_diff": float(abs_diff.max()) if abs_diff.numel() else 0.0,
        "max_ulp": max_ulp(a, b),
        "elements_differ": count,
        "numel": a.numel(),
    }


def diff_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Every tensor that differs between two flat states (sorted by name)."""
    out = []
    for name in sorted(set(a) | set(b)):
        d = tensor_diff(name, a.get(name), b.get(name))
        if d is not None:
            out.append(d)
    return out


def fingerprints(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """``step -> fingerprint row`` from metrics rows."""
    return {int(r["step"]): r for r in rows if r.get("kind") == "fingerprint"}


def first_divergence(
    a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], *, up_to: int | None = None
) -> dict[str, Any]:
    """First common step whose fingerprints differ, the last equal one before it, steps compared."""
    common = sorted(s for s in set(a) & set(b) if up_to is None or s <= up_to)
    last_equal = None
    for s in common:
        if a[s]["sha256"] != b[s]["sha256"]:
            return {"step": s, "last_equal": last_equal, "compared": len(common)}
        last_equal = s
    return {"step": None, "last_equal": last_equal, "compared": len(common)}


def compare_metrics(
    a: list[dict[str, Any]], b: list[dict[str, Any]], *, up_to: int | None = None
) -> dict[str, Any]:
    """Step/epoch rows compared exactly (timing fields ignored); the first difference, if any."""

    def keep(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in r.items() if k not in TIMING_FIELDS}
            for r in rows
            if r.get("kind") in ("step", "epoch") and (up_to is None or r["step"] <= up_to)
        ]

    ra, rb = keep(a), keep(b)
    for i, (x, y) in enumerate(zip(ra, rb, strict=False)):
        if x != y:
            return {
                "identical": False,
                "rows": len(ra),
                "first_difference": {"a": x, "b": y, "row": i},
            }
    if len(ra) != len(rb):
        return {
            "identical": False,
            "rows": len(ra),
            "first_difference": {
                "row": min(len(ra), len(rb)),
                "a_rows": len(ra),
                "b_rows": len(rb),
            },
        }
    return {"identical": True, "rows": len(ra)}
