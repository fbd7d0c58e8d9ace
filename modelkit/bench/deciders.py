"""A table of deciders, one per kind of metric: each reads both sides' values of one metric
and sets its verdict (regression, improvement, unchanged, undecided, info).

==============  ======================================================================
kind            decided by
==============  ======================================================================
instructions    instructions per call, a relative threshold (deterministic counts)
timing, rate    paired ABBA log-ratios (or Welch against a baseline), Holm over the suite
accuracy        non-inferiority in points, paired by seed, higher is better by default
quality         non-inferiority in the metric's unit and declared direction
memory          CPU peak RSS within a relative tolerance
exact           parameter counts, CUDA peak memory: equal or within a tolerance
info            shown, never gated
==============  ======================================================================

Timings are decided together at the end (Holm needs every p-value); after that, any metric left
undecided while its estimate is worse than its threshold is marked *blocking*: undecided is
never a pass (:func:`mark_blocking`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from scipy import stats as sps

from modelkit.bench import sides, stats
from modelkit.bench.config import BenchConfig, Thresholds
from modelkit.bench.outcome import BenchError
from modelkit.bench.results import MetricRecord, ProcessResult
from modelkit.bench.stats import MetricResult

TIMING_KINDS = ("timing", "rate")
# with a single timing sample per side there is no noise estimate: a slowdown beyond this still
# blocks (processes' minimum times vary ~4% between processes on the shared 2-core machine)
ONE_SAMPLE_SLOWDOWN = 0.5


@dataclass
class Inputs:
    """One metric to decide: its result row, how it was recorded, and both sides."""

    result: MetricResult
    meta: MetricRecord
    base: list[ProcessResult]
    head: list[ProcessResult]
    nodeid: str
    limits: Thresholds
    paired: bool
    covered: bool  # the benchmark has instruction counts on both sides
    siblings: frozenset[str]  # every metric name of this benchmark
    timings: list[MetricResult] = field(default_factory=list)
    derived: list[tuple[MetricResult, str]] = field(default_factory=list)

    def scalars(self, *, fresh_only: bool = False) -> tuple[list[float], list[float]]:
        """Both sides' values of this metric (medians set on the result)."""
        name = self.result.metric
        b = sides.flat(sides.values_by_round(self.base, self.nodeid, name, fresh_only=fresh_only))
        h = sides.flat(sides.values_by_round(self.head, self.nodeid, name, fresh_only=fresh_only))
        self.result.n_base, self.result.n_head = len(b), len(h)
        if b and h:
            self.result.base, self.result.head = _median(b), _median(h)
        return b, h


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _missing(r: MetricResult) -> None:
    r.verdict, r.note = "undecided", "missing on one side"


def decide_instructions(x: Inputs) -> None:
    """Instructions per call against ``instr_threshold``."""
    b, h = x.scalars()
    if not b or not h:
        return _missing(x.result)
    spread = max(sides.spreads(x.base, x.nodeid, x.result.metric)
                 + sides.spreads(x.head, x.nodeid, x.result.metric))  # fmt: skip
    stats.decide_instructions(x.result, b, h, x.limits.instr_threshold, spread=spread)


def decide_exact(x: Inputs) -> None:
    """Deterministic numbers within ``exact_tolerance``."""
    b, h = x.scalars()
    if not b or not h:
        return _missing(x.result)
    x.result.lane = "exact"
    stats.decide_exact(x.result, b, h, x.limits.exact_tolerance)


def decide_memory(x: Inputs) -> None:
    """CPU peak RSS within ``memory_tolerance``."""
    b, h = x.scalars()
    if not b or not h:
        return _missing(x.result)
    x.result.lane = "memory"
    stats.decide_memory(x.result, b, h, x.limits.memory_tolerance)


def decide_accuracy(x: Inputs) -> None:
    """Accuracy points, non-inferiority (higher is better unless recorded otherwise)."""
    hib = x.meta.higher_is_better
    x.result.lane = "accuracy"
    stats.decide_accuracy(
        x.result,
        sides.seed_values(x.base, x.nodeid, x.result.metric),
        sides.seed_values(x.head, x.nodeid, x.result.metric),
        margin_points=x.limits.accuracy_margin,
        alpha=x.limits.alpha,
        higher_is_better=True if hib is None else bool(hib),
    )


def decide_quality(x: Inputs) -> None:
    """Any quality metric in its own unit and declared direction, non-inferiority with the
    recorded ``margin`` or ``quality_margin`` x |REF|."""
    r, hib = x.result, x.meta.higher_is_better
    r.higher_is_better, r.lane = True if hib is None else bool(hib), "quality"
    b = sides.seed_values(x.base, x.nodeid, r.metric)
    h = sides.seed_values(x.head, x.nodeid, r.metric)
    margin = x.meta.margin
    if margin is None:
        margin = x.limits.quality_margin * abs(sum(b) / len(b)) if b else 0.0
    r.threshold = float(margin)
    stats.decide_quality(r, b, h, margin=float(margin), alpha=x.limits.alpha, unit=r.unit)


def decide_timing(x: Inputs) -> None:
    """Timings and rates: queued for the suite-wide Holm step (:func:`finish_timings`);
    information only where instruction counts decide the benchmark."""
    r = x.result
    if x.covered:  # any process's wall time, cached ones included: shown, not compared
        x.scalars()
        r.ratio = r.head / r.base if r.base and r.head is not None else None
        r.verdict, r.lane = "info", "info"
        r.note = "wall time, information only: instructions per call decide"
        return
    b, h = x.scalars(fresh_only=True)
    if not b or not h:
        return _missing(r)
    r.lane = "time"
    if x.meta.derived_from in x.siblings:
        x.derived.append((r, x.meta.derived_from))
        return
    if x.paired:
        base = sides.values_by_round(x.base, x.nodeid, r.metric, fresh_only=True)
        head = sides.values_by_round(x.head, x.nodeid, r.metric, fresh_only=True)
        d = stats.paired_log_ratios(base, head, higher_is_better=r.higher_is_better)
        r.est, r.se, r.df, r.p_value = stats.timing_test(diffs=d)
        r.n_base = r.n_head = len(d)
    else:
        r.est, r.se, r.df, r.p_value = stats.timing_test(
            base=b, head=h, higher_is_better=r.higher_is_better
        )
    x.timings.append(r)


def decide_info(x: Inputs) -> None:
    """Reported, not gated."""
    x.scalars()
    r = x.result
    r.ratio = r.head / r.base if r.base and r.head is not None else None
    r.verdict, r.lane, r.note = "info", "info", "informational, not gated"


DECIDERS: dict[str, Callable[[Inputs], None]] = {
    "instructions": decide_instructions,
    "timing": decide_timing,
    "rate": decide_timing,
    "accuracy": decide_accuracy,
    "quality": decide_quality,
    "memory": decide_memory,
    "exact": decide_exact,
    "info": decide_info,
}


def finish_timings(timings: list[MetricResult], derived: list[tuple[MetricResult, str]]) -> None:
    """Holm over every timing metric, then rates derived from a time take its verdict."""
    stats.decide_timings(timings)
    by_key = {(r.benchmark, r.metric): r for r in timings}
    for r, src_name in derived:
        src = by_key.get((r.benchmark, src_name))
        if src is None:
            continue
        flip = r.higher_is_better  # a rate is 1/time
        r.verdict, r.p_value, r.p_holm = src.verdict, src.p_value, src.p_holm
        r.mde, r.ci_level, r.n_base, r.n_head = src.mde, src.ci_level, src.n_base, src.n_head
        if src.ratio is not None:
            r.ratio = 1 / src.ratio if flip else src.ratio
        if src.ci_low is not None and src.ci_high is not None:
            r.ci_low, r.ci_high = (
                (1 / src.ci_high, 1 / src.ci_low) if flip else (src.ci_low, src.ci_high)
            )
        r.note, r.threshold = f"same samples as {src_name}", src.threshold
        r.est = src.est


def mark_blocking(r: MetricResult) -> None:
    """An undecided metric whose estimate is worse than its threshold fails the gate (exit 3),
    with the reason: the lane saw a change it could not decide."""
    if r.verdict != "undecided":
        return
    if r.kind == "instructions" and r.ratio is not None and r.ratio - 1 >= r.threshold:
        r.blocking = (
            f"instructions per call {(r.ratio - 1) * 100:+.2f}% (threshold "
            f"{r.threshold * 100:.2g}%) but the repeated counts varied as much: not decidable"
        )
    elif r.kind in TIMING_KINDS and _slower_beyond_threshold(r):
        r.blocking = (
            f"{'slower' if r.kind == 'timing' else 'lower'} by {math.expm1(r.est or 0) * 100:.1f}%"
            f" (threshold {r.threshold * 100:.2g}%) but not decided within the budget"
        )


def _slower_beyond_threshold(r: MetricResult) -> bool:
    """The estimate is a slowdown beyond the threshold, and either significant on its own (one-sided, before Holm and the rank test): the lane
    saw a change it could not confirm; or, with one sample (no noise estimate), a slowdown
    beyond :data:`ONE_SAMPLE_SLOWDOWN`. A noisy estimate whose interval still holds 1 is not a
    change seen (an A/A compare on a loaded machine would otherwise fail)."""
    if r.est is None or not math.isfinite(r.est) or r.est <= math.log1p(r.threshold):
        return False
    if r.se is None or not math.isfinite(r.se) or r.df is None or not math.isfinite(r.df):
        return r.est > math.log1p(max(r.threshold, ONE_SAMPLE_SLOWDOWN))
    if r.se == 0:
        return True
    return float(sps.t.sf(r.est / r.se, r.df)) < r.alpha


def new_result(nodeid: str, metric: str, meta: MetricRecord, limits: Thresholds) -> MetricResult:
    """An undecided row for one metric, with its thresholds."""
    return MetricResult(
        nodeid, metric, meta.kind, meta.unit, None, None,
        higher_is_better=bool(meta.higher_is_better),
        threshold=limits.threshold, alpha=limits.alpha,
    )  # fmt: skip


def status_row(nodeid: str, base: list[ProcessResult], head: list[ProcessResult]):
    """An error/skipped row when either side errored or skipped, with the error record."""
    sb, mb = sides.side_status(base, nodeid)
    sh, mh = sides.side_status(head, nodeid)
    if "error" in (sb, sh):
        side = "both sides" if sb == sh == "error" else ("REF" if sb == "error" else "HEAD")
        msg = mb if sb == "error" else mh
        row = MetricResult(nodeid, "-", "error", "", None, None, verdict="error",
                           note=f"{side}: {msg}")  # fmt: skip
        return row, BenchError(nodeid, side, msg)
    if "skipped" in (sb, sh):
        why = mh if sh == "skipped" else mb
        return MetricResult(nodeid, "-", "skipped", "", None, None, verdict="skipped",
                            note=why), None  # fmt: skip
    return None, None


UNJUDGED = (
    "recorded nothing the gate can judge: time a call with benchmark(fn), or record with "
    "bench.metric(...) / a bench.* measurement"
)


def evaluate(
    base: list[ProcessResult], head: list[ProcessResult], cfg: BenchConfig, *, paired: bool
) -> tuple[list[MetricResult], list[BenchError]]:
    """Decide every metric of every benchmark; errors on either side are reported, not judged;
    a benchmark with nothing to judge gets one ``unjudged`` row (never dropped)."""
    covered = sides.covered_by_instructions(base) & sides.covered_by_instructions(head)
    results: list[MetricResult] = []
    errors: list[BenchError] = []
    timings: list[MetricResult] = []
    derived: list[tuple[MetricResult, str]] = []
    for nodeid, name in sorted(sides.benchmark_names(base, head).items()):
        row, error = status_row(nodeid, base, head)
        if row is not None:
            results.append(row)
            errors += [error] if error else []
            continue
        meta = sides.metric_meta(base, head, nodeid)
        if not sides.judged(meta):
            results.append(MetricResult(nodeid, "-", "unjudged", "", None, None,
                                        verdict="unjudged", note=UNJUDGED))  # fmt: skip
        limits = cfg.for_benchmark(name)
        for metric, m in meta.items():
            r = new_result(nodeid, metric, m, limits)
            results.append(r)
            x = Inputs(r, m, base, head, nodeid, limits, paired, nodeid in covered,
                       frozenset(meta), timings, derived)  # fmt: skip
            DECIDERS.get(r.kind, decide_info)(x)
    finish_timings(timings, derived)
    for r in results:
        mark_blocking(r)
    return results, errors
