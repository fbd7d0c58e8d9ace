"""The gate's statistics: one decision per metric, by metric type.

* timings (``timing``, and ``rate`` = 1/time): a confidence interval on the HEAD/REF ratio.
  A difference is significant only when both the t test and its rank counterpart (Wilcoxon
  signed-rank paired, Mann-Whitney unpaired) reject, so heavy-tailed contention noise cannot
  carry a verdict alone (with ABBA pairing that needs at least 6 rounds).
  Interleaved runs are paired by ABBA round (each round gives one log-ratio, which cancels linear
  drift within the round); saved baselines are compared unpaired (Welch). Intervals and p-values
  come from scipy's t tests on log values; Holm's step-down controls the family-wise false-alarm
  rate across every timing metric in the suite.
  regression  = significantly slower (Holm) and the estimate exceeds ``1 + threshold``
  improvement = significantly faster and the estimate is below ``1 / (1 + threshold)``
  unchanged   = the whole interval lies inside ``[1/(1+threshold), 1+threshold]``
  undecided   = anything else (more rounds would help)
* instruction counts (``instructions``, callgrind, the instruction lane): deterministic when
  inputs and weights are seeded, so no statistics: HEAD/REF of the per-call counts, a regression
  when it is ``>= 1 + instr_threshold`` (the default 0.5% threshold flags a 0.5% change), an improvement at
  ``<= 1 - instr_threshold``; undecided when the repeated counts of one process varied by as
  much as the threshold (something in the measured call is not deterministic).
* deterministic metrics (parameter count, CUDA peak memory): exact, or within ``exact_tolerance``.
* CPU memory (peak RSS): median per side, within ``memory_tolerance``.
* accuracy: non-inferiority over k seeds, paired by seed, with margin ``accuracy_margin`` points.

The minimum detectable effect (MDE) is the smallest true slowdown this many samples would flag
with 95% power: ``max(t_crit * se, log(1 + threshold)) + t_0.95 * se`` on the log scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

VERDICTS = (
    "regression", "improvement", "unchanged", "undecided", "error", "skipped", "info", "unjudged"
)  # fmt: skip
POWER = 0.95


@dataclass
class MetricResult:
    """One metric of one benchmark: both sides, the ratio with its interval, and the verdict."""

    benchmark: str
    metric: str
    kind: str
    unit: str
    base: float | None
    head: float | None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None
    mde: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    n_base: int = 0
    n_head: int = 0
    verdict: str = "undecided"
    note: str = ""
    higher_is_better: bool = False
    # internal: log cost-ratio estimate and its standard error and dof (timings only)
    est: float | None = None
    se: float | None = None
    df: float | None = None
    threshold: float = 0.03
    alpha: float = 0.05
    # which lane decided the verdict: instructions | time | exact | memory | accuracy | info
    lane: str = ""
    accepted: str | None = None  # the accept (trailer or --accept) covering this change, if any
    # why an undecided metric fails the gate: the lane saw a change beyond its threshold but
    # could not decide it (undecided is never a pass then); "" otherwise
    blocking: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        d = asdict(self)
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()
        }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def paired_log_ratios(
    base: dict[int, list[float]], head: dict[int, list[float]], *, higher_is_better: bool = False
) -> np.ndarray:
    """Per ABBA round: mean log(head cost) - mean log(base cost). Cost = time (or 1/rate)."""
    sign = -1.0 if higher_is_better else 1.0
    d = []
    for r in sorted(set(base) & set(head)):
        a = [v for v in base[r] if v > 0]
        b = [v for v in head[r] if v > 0]
        if a and b:
            d.append(sign * (np.mean(np.log(b)) - np.mean(np.log(a))))
    return np.asarray(d, dtype=float)


def timing_test(
    *,
    diffs: np.ndarray | None = None,
    base: Sequence[float] | None = None,
    head: Sequence[float] | None = None,
    higher_is_better: bool = False,
) -> tuple[float, float, float, float]:
    """(estimate, se, dof, two-sided p) of the log cost-ratio: paired ``diffs`` or unpaired Welch."""
    if diffs is not None:
        n = len(diffs)
        if n < 2:
            return (float(diffs[0]) if n else math.nan), math.nan, math.nan, math.nan
        est = float(np.mean(diffs))
        sd = float(np.std(diffs, ddof=1))
        if float(np.ptp(diffs)) <= 1e-12:
            return est, 0.0, float(n - 1), (1.0 if est == 0 else 0.0)
        res = sps.ttest_1samp(diffs, 0.0)
        # both the t test and the Wilcoxon signed-rank test must reject: contention bursts on a
        # shared runner give heavy tails, where the t test alone raises false alarms
        robust = sps.wilcoxon(diffs).pvalue
        return est, sd / math.sqrt(n), float(res.df), float(max(res.pvalue, robust))
    sign = -1.0 if higher_is_better else 1.0
    la = sign * np.log(np.asarray(base, dtype=float))
    lb = sign * np.log(np.asarray(head, dtype=float))
    est = float(np.mean(lb) - np.mean(la))
    if len(la) < 2 or len(lb) < 2:
        return est, math.nan, math.nan, math.nan
    va, vb = np.var(la, ddof=1) / len(la), np.var(lb, ddof=1) / len(lb)
    se = float(math.sqrt(va + vb))
    if se == 0.0:
        return est, 0.0, float(len(la) + len(lb) - 2), (1.0 if est == 0 else 0.0)
    res = sps.ttest_ind(lb, la, equal_var=False)
    robust = sps.mannwhitneyu(lb, la, alternative="two-sided").pvalue  # see the paired case
    return est, se, float(res.df), float(max(res.pvalue, robust))


def decide_timings(results: list[MetricResult]) -> None:
    """Holm across ``results`` (timing metrics with est/se/df/p filled), then set CI, MDE, verdict."""
    testable = [r for r in results if r.p_value is not None and math.isfinite(r.p_value)]
    if testable:
        alpha = min(r.alpha for r in testable)  # one family: the strictest alpha
        adjusted = holm([r.p_value for r in testable])  # type: ignore[misc]
        ranks = np.argsort(np.argsort([r.p_value for r in testable]))
        m = len(testable)
        for r, p_adj, rank in zip(testable, adjusted, ranks, strict=True):
            r.p_holm = float(p_adj)
            level_alpha = alpha / (m - int(rank))  # Holm's critical level at this rank
            r.ci_level = 1 - level_alpha
    for r in results:
        _timing_verdict(r)


def _timing_verdict(r: MetricResult) -> None:
    band = math.log1p(r.threshold)
    if r.est is None or not math.isfinite(r.est):
        r.verdict, r.note = "undecided", r.note or "not enough samples"
        return
    cost_ratio = math.exp(r.est)
    r.ratio = 1 / cost_ratio if r.higher_is_better else cost_ratio
    if r.se is None or not math.isfinite(r.se) or r.df is None or r.ci_level is None:
        r.verdict, r.note = "undecided", r.note or "needs at least 2 rounds per side"
        return
    tcrit = float(sps.t.ppf(1 - (1 - r.ci_level) / 2, r.df)) if r.se > 0 else 0.0
    lo, hi = r.est - tcrit * r.se, r.est + tcrit * r.se
    if r.higher_is_better:
        r.ci_low, r.ci_high = math.exp(-hi), math.exp(-lo)
    else:
        r.ci_low, r.ci_high = math.exp(lo), math.exp(hi)
    tpow = float(sps.t.ppf(POWER, r.df)) if r.se > 0 else 0.0
    r.mde = math.expm1(max(tcrit * r.se, band) + tpow * r.se)
    significant = r.p_holm is not None and r.p_holm < r.alpha
    if significant and r.est > band:
        r.verdict = "regression"
    elif significant and r.est < -band:
        r.verdict = "improvement"
    elif lo > -band and hi < band:
        r.verdict = "unchanged"
    else:
        r.verdict = "undecided"


def decide_exact(r: MetricResult, base: Sequence[float], head: Sequence[float], tol: float) -> None:
    """Deterministic metrics: equal, or within a relative tolerance."""
    b, h = float(np.median(base)), float(np.median(head))
    r.base, r.head = b, h
    r.ratio = h / b if b else (1.0 if h == b else math.inf)
    notes = []
    if len(set(base)) > 1 or len(set(head)) > 1:
        notes.append("varied between processes")
    if abs(h - b) <= tol * abs(b):
        r.verdict = "unchanged"
    else:
        r.verdict = "regression" if h > b else "improvement"
    r.mde = tol
    r.note = "; ".join(notes)


def decide_instructions(
    r: MetricResult,
    base: Sequence[float],
    head: Sequence[float],
    threshold: float,
    *,
    spread: float = 0.0,
) -> None:
    """Instruction counts per call: a relative threshold, no statistics (see module doc).
    ``spread`` is the largest within-process relative spread of the repeated counts."""
    b, h = float(np.median(base)), float(np.median(head))
    r.base, r.head = b, h
    r.threshold = threshold
    r.ratio = h / b if b else (1.0 if h == b else math.inf)
    r.mde = threshold
    r.lane = "instructions"
    change = round(r.ratio - 1, 9)
    notes = [f"{change * 100:+.3f}% instructions"]
    if spread > 0:
        notes.append(f"repeated calls varied {spread * 100:.3f}%")
    if spread >= threshold and abs(change) < spread + threshold:
        r.verdict = "undecided"
        notes.append("counts not deterministic; seed the inputs or raise instr_threshold")
    elif change >= threshold:  # beyond the threshold, and (if counts varied) beyond their spread
        r.verdict = "regression"
    elif change <= -threshold:
        r.verdict = "improvement"
    else:
        r.verdict = "unchanged"
    r.note = "; ".join(notes)


def decide_memory(
    r: MetricResult, base: Sequence[float], head: Sequence[float], tol: float
) -> None:
    """CPU memory: medians per side within a relative tolerance."""
    b, h = float(np.median(base)), float(np.median(head))
    r.base, r.head = b, h
    r.ratio = h / b if b else math.inf
    r.mde = tol
    if r.ratio > 1 + tol:
        r.verdict = "regression"
    elif r.ratio < 1 - tol:
        r.verdict = "improvement"
    else:
        r.verdict = "unchanged"


def decide_accuracy(
    r: MetricResult,
    base: Sequence[float],
    head: Sequence[float],
    *,
    margin_points: float,
    alpha: float,
    higher_is_better: bool = True,
) -> None:
    """Accuracy (a fraction): non-inferiority in points (x100) with ``margin_points``."""
    r.higher_is_better = higher_is_better
    b = [float(v) * 100 for v in base]
    h = [float(v) * 100 for v in head]
    decide_quality(r, b, h, margin=margin_points, alpha=alpha, unit="pts")
    r.base = r.base / 100 if r.base is not None else None
    r.head = r.head / 100 if r.head is not None else None


def decide_quality(
    r: MetricResult,
    base: Sequence[float],
    head: Sequence[float],
    *,
    margin: float,
    alpha: float,
    unit: str = "",
) -> None:
    """Non-inferiority in the metric's own unit and direction (``r.higher_is_better``): HEAD is
    fine unless it may be worse than REF by more than ``margin``. Values are paired by seed
    (position); ``r.est`` and the interval are HEAD - REF in the metric's unit."""
    n = min(len(base), len(head))
    b, h = np.asarray(base[:n], dtype=float), np.asarray(head[:n], dtype=float)
    r.n_base = r.n_head = n
    if n == 0:
        r.verdict, r.note = "undecided", "no values on one side"
        return
    r.base, r.head = float(np.mean(b)), float(np.mean(h))
    r.ratio = r.head / r.base if r.base else None
    d = h - b
    est = r.est = float(np.mean(d))
    lo = hi = est
    if n >= 2 and float(np.ptp(d)) > 1e-12:
        res = sps.ttest_1samp(d, 0.0)
        ci = res.confidence_interval(1 - 2 * alpha)  # two-sided 1-2a = one-sided 1-a bound
        lo, hi = float(ci.low), float(ci.high)
        r.p_value = float(res.pvalue)
    r.ci_low, r.ci_high, r.ci_level = lo, hi, 1 - alpha
    r.mde = (hi - lo) / 2  # half-width: the resolution reached with these seeds
    sign = 1.0 if r.higher_is_better else -1.0
    better_est, worst = sign * est, min(sign * lo, sign * hi)  # "better" is positive
    best = max(sign * lo, sign * hi)
    word = "higher" if r.higher_is_better else "lower"
    r.note = f"Δ {est:+.4g}{' ' + unit if unit else ''} over {n} seed(s) ({word} is better), "
    r.note += f"margin {margin:.4g}"
    if better_est < -margin:
        r.verdict = "regression"
    elif worst >= -margin:
        r.verdict = "improvement" if worst > margin and best > margin else "unchanged"
    else:
        r.verdict = "undecided"
        r.note += "; add seeds to decide"
