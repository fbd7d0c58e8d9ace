"""The gate's statistics and config, on synthetic samples with known truth (fast, no processes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelkit.bench.config import parse_bench_config
from modelkit.bench.stats import (
    MetricResult,
    decide_accuracy,
    decide_exact,
    decide_memory,
    decide_timings,
    holm,
    paired_log_ratios,
    timing_test,
)
from modelkit.errors import ConfigError


def _timing(base, head, *, threshold=0.03, hib=False, name="b"):
    d = paired_log_ratios(base, head, higher_is_better=hib)
    r = MetricResult(
        name, "time", "timing", "s", None, None, higher_is_better=hib, threshold=threshold
    )
    r.est, r.se, r.df, r.p_value = timing_test(diffs=d)
    return r


def _rounds(rng, n, factor, noise=0.01):
    base = {i: list(1e-3 * np.exp(rng.normal(0, noise, 2))) for i in range(n)}
    head = {i: list(1e-3 * factor * np.exp(rng.normal(0, noise, 2))) for i in range(n)}
    return base, head


def test_holm_matches_definition():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


def test_clear_slowdown_is_regression_and_equal_is_unchanged():
    rng = np.random.default_rng(0)
    slow = _timing(*_rounds(rng, 8, 1.10), name="slow")
    same = _timing(*_rounds(rng, 8, 1.00), name="same")
    decide_timings([slow, same])
    assert slow.verdict == "regression" and slow.ci_low > 1.0 and 1.05 < slow.ratio < 1.15
    assert same.verdict == "unchanged" and same.ci_low > 1 / 1.03 and same.ci_high < 1.03
    assert 0 < same.mde < 0.1 and same.p_holm >= same.p_value


def test_rate_higher_is_better_flips_direction():
    rng = np.random.default_rng(1)
    base, head = _rounds(rng, 8, 0.85)  # rate dropped 15% = slower
    r = _timing(base, head, hib=True)
    decide_timings([r])
    assert r.verdict == "regression" and r.ratio < 0.9 and r.ci_high < 1.0


def test_too_few_rounds_and_noise_stay_undecided():
    rng = np.random.default_rng(2)
    one = _timing(*_rounds(rng, 1, 1.5))
    noisy = _timing(*_rounds(rng, 3, 1.02, noise=0.2))
    decide_timings([one, noisy])
    assert one.verdict == "undecided" and noisy.verdict == "undecided"


def test_aa_false_alarm_rate_with_holm_is_low():
    rng = np.random.default_rng(3)
    alarms = 0
    for _ in range(200):
        rs = [_timing(*_rounds(rng, 6, 1.0, noise=0.03), name=str(i)) for i in range(5)]
        decide_timings(rs)
        alarms += any(r.verdict == "regression" for r in rs)
    assert alarms / 200 <= 0.05


def test_welch_for_saved_baselines():
    est, se, df, p = timing_test(
        base=[1.0, 1.01, 0.99, 1.0, 1.005, 0.995], head=[1.2, 1.21, 1.19, 1.2, 1.195, 1.205]
    )
    assert math.exp(est) == pytest.approx(1.2, rel=0.01) and p < 0.01


def test_rank_test_must_agree_with_the_t_test():
    """A burst that makes a few rounds consistent is not enough: the rank test needs 6 rounds."""
    consistent5 = np.log([1.08, 1.09, 1.085, 1.07, 1.09])
    assert timing_test(diffs=consistent5)[3] > 0.05  # t alone would say p < 0.001
    consistent6 = np.log([1.08, 1.09, 1.085, 1.07, 1.09, 1.08])
    assert timing_test(diffs=consistent6)[3] < 0.05
    # one huge outlier among otherwise mixed-sign rounds: no verdict
    outlier = np.log([1.40, 1.01, 0.99, 1.02, 0.98, 1.01, 1.03])
    assert timing_test(diffs=outlier)[3] > 0.05


def test_exact_and_memory():
    r = MetricResult("b", "params", "exact", "", None, None)
    decide_exact(r, [100, 100], [101, 101], 0.0)
    assert r.verdict == "regression"
    decide_exact(r, [100, 100], [101, 101], 0.02)
    assert r.verdict == "unchanged"
    m = MetricResult("b", "rss", "memory", "bytes", None, None)
    decide_memory(m, [100.0, 102.0], [130.0, 131.0], 0.10)
    assert m.verdict == "regression"


def test_accuracy_non_inferiority():
    r = MetricResult("b", "accuracy", "accuracy", "fraction", None, None)
    decide_accuracy(r, [0.90, 0.91, 0.92], [0.90, 0.91, 0.92], margin_points=0.5, alpha=0.05)
    assert r.verdict == "unchanged"
    decide_accuracy(r, [0.90, 0.91, 0.92], [0.88, 0.89, 0.90], margin_points=0.5, alpha=0.05)
    assert r.verdict == "regression" and r.est == pytest.approx(-2.0)
    decide_accuracy(r, [0.90, 0.91, 0.92], [0.91, 0.89, 0.925], margin_points=0.5, alpha=0.05)
    assert r.verdict == "undecided"  # mean within margin, interval too wide for 3 seeds


def test_config_validation_and_per_benchmark():
    cfg = parse_bench_config(
        {"threshold": 0.05, "per_benchmark": {"test_inf*": {"threshold": 0.2}}}, max_time=60
    )
    assert cfg.for_benchmark("test_inference[x]").threshold == 0.2
    assert cfg.for_benchmark("test_train").threshold == 0.05 and cfg.max_time == 60
    with pytest.raises(ConfigError, match="did you mean 'threshold'"):
        parse_bench_config({"treshold": 0.1})
    with pytest.raises(ConfigError, match="must be a number"):
        parse_bench_config({"alpha": "x"})
    with pytest.raises(ConfigError, match="min_rounds"):
        parse_bench_config({"min_rounds": 1})


def test_a_skipped_benchmark_keeps_its_reason() -> None:
    """A benchmark skipped on both sides (e.g. CUDA on a CPU runner) is listed with pytest's
    reason in the terminal rows and the Markdown report, not judged."""
    from modelkit.bench import runner
    from modelkit.bench.compare import evaluate
    from modelkit.bench.config import parse_bench_config
    from modelkit.bench.report import markdown, rows

    node = "benchmarks/test_x.py::test_cuda"
    sides = [
        runner.ProcessResult(
            side=side,
            round=0,
            slot=0,
            seconds=1.0,
            returncode=0,
            outcomes={node: "skipped"},
            messages={node: "needs a CUDA device"},
        )  # fmt: skip
        for side in ("base", "head")
    ]
    metrics, errors = evaluate(sides[:1], sides[1:], parse_bench_config({}), paired=False)
    assert errors == [] and [(m.verdict, m.note) for m in metrics] == [
        ("skipped", "needs a CUDA device")
    ]
    from modelkit.bench.compare import Outcome
    from modelkit.bench.harness import Fingerprint
    from modelkit.bench.outcome import BaseInfo, HeadInfo

    outcome = Outcome(
        mode="compare", head=HeadInfo("b" * 40, False, "."), base=BaseInfo("main", "a" * 40, "ref"),
        fingerprint=Fingerprint(), config=parse_bench_config({}), rounds=1, metrics=metrics,
    )  # fmt: skip
    assert rows(outcome)[0][-1] == "skipped (needs a CUDA device)"
    assert "⏭ skipped (needs a CUDA device)" in markdown(outcome)
