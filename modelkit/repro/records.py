"""Torch-free comparisons of run records: step fingerprints and metrics rows.

Kept apart from the tensor comparisons so the identical path of ``modelkit repro`` never
imports torch in the parent process (its workers do the training).
"""

from __future__ import annotations

from typing import Any

from modelkit.repro.report import FirstDivergence, MetricsComparison, MetricsDifference
from modelkit.runs.record import MetricRow

# metrics fields that measure time, not results: never compared
TIMING_FIELDS = frozenset({"elapsed_s", "samples_per_second"})


def fingerprints(rows: list[MetricRow]) -> dict[int, MetricRow]:
    """``step -> fingerprint row`` from metrics rows."""
    return {r.step: r for r in rows if r.kind == "fingerprint"}


def first_divergence(
    a: dict[int, MetricRow], b: dict[int, MetricRow], *, up_to: int | None = None
) -> FirstDivergence:
    """First common step whose fingerprints differ, the last equal one before it, steps compared."""
    common = sorted(s for s in set(a) & set(b) if up_to is None or s <= up_to)
    last_equal = None
    for s in common:
        if a[s].sha256 != b[s].sha256:
            return FirstDivergence(step=s, last_equal=last_equal, compared=len(common))
        last_equal = s
    return FirstDivergence(step=None, last_equal=last_equal, compared=len(common))


def _compared(rows: list[MetricRow], up_to: int | None) -> list[dict[str, Any]]:
    """The step and epoch rows as written, without their timing fields."""
    return [
        {k: v for k, v in r.raw.items() if k not in TIMING_FIELDS}
        for r in rows
        if r.kind in ("step", "epoch") and (up_to is None or r.step <= up_to)
    ]


def compare_metrics(
    a: list[MetricRow], b: list[MetricRow], *, up_to: int | None = None
) -> MetricsComparison:
    """Step/epoch rows compared exactly (timing fields ignored); the first difference, if any."""
    ra, rb = _compared(a, up_to), _compared(b, up_to)
    for i, (x, y) in enumerate(zip(ra, rb, strict=False)):
        if x != y:
            diff = MetricsDifference(row=i, a=x, b=y)
            return MetricsComparison(identical=False, rows=len(ra), first_difference=diff)
    if len(ra) != len(rb):
        diff = MetricsDifference(row=min(len(ra), len(rb)), a_rows=len(ra), b_rows=len(rb))
        return MetricsComparison(identical=False, rows=len(ra), first_difference=diff)
    return MetricsComparison(identical=True, rows=len(ra))
