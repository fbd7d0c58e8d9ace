"""Torch-free comparisons of run records: step fingerprints and metrics rows.

Kept apart from the tensor comparisons so the identical path of ``modelkit repro`` never
imports torch in the parent process (its workers do the training).
"""

from __future__ import annotations

from typing import Any

# metrics fields that measure time, not results: never compared
TIMING_FIELDS = frozenset({"elapsed_s", "samples_per_second"})


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


def state_sha256(tensors: dict[str, Any], meta: dict[str, Any]) -> str:
    """sha256 of params, buffers and optimizer state (+ scheduler) of a dumped state."""
    from modelkit.training.fingerprint import state_digest

    keep = {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}
    objects = meta.get("objects", {})
    return state_digest(
        keep, {"optimizer": meta["optimizer"], "scheduler": objects.get("scheduler")}
    )
