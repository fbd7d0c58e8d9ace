"""``modelkit benchmark [--compare REF | --baseline FILE]``: run the suite, interleave both sides,
decide per metric, stop early when decided, within a time budget.

Interleaving: round r runs REF, HEAD, HEAD, REF (ABBA; odd rounds BAAB), each in a fresh process
running the suite with a few pytest-benchmark rounds; each process's minimum is one sample.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.bench import plugin as harness
from modelkit.bench import runner, worktree
from modelkit.bench.config import BenchConfig
from modelkit.bench.stats import (
    MetricResult,
    decide_accuracy,
    decide_exact,
    decide_memory,
    decide_timings,
    paired_log_ratios,
    timing_test,
)
from modelkit.errors import EXIT_CHECK_FAILED, EXIT_FAILURE, EXIT_OK, BadInputError
from modelkit.io import write_json_atomic

Event = Callable[[str], None]
TIMING_KINDS = ("timing", "rate")
ORDERS = (("base", "head", "head", "base"), ("head", "base", "base", "head"))


@dataclass
class Outcome:
    """The result of ``modelkit benchmark``: metrics with verdicts, and what was compared."""

    mode: str  # run | compare | baseline
    head: dict[str, Any]
    base: dict[str, Any] | None
    fingerprint: dict[str, Any]
    config: dict[str, Any]
    rounds: int = 0
    wall_s: float = 0.0
    stopped: str = ""
    metrics: list[MetricResult] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    results_file: str | None = None

    @property
    def regressions(self) -> list[MetricResult]:
        """Metrics judged a regression."""
        return [m for m in self.metrics if m.verdict == "regression"]

    @property
    def exit_code(self) -> int:
        """0 no regression, 3 regression, 1 a benchmark errored."""
        if self.regressions:
            return EXIT_CHECK_FAILED
        return EXIT_FAILURE if self.errors else EXIT_OK

    @property
    def status(self) -> str:
        """regression | error | ok."""
        return {EXIT_CHECK_FAILED: "regression", EXIT_FAILURE: "error"}.get(self.exit_code, "ok")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        undecided = [m for m in self.metrics if m.verdict == "undecided"]
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "mode": self.mode,
            "head": self.head,
            "base": self.base,
            "fingerprint": self.fingerprint,
            "config": self.config,
            "rounds": self.rounds,
            "wall_s": round(self.wall_s, 2),
            "stopped": self.stopped,
            "summary": {
                "regressions": len(self.regressions),
                "undecided": len(undecided),
                "errors": len(self.errors),
                "metrics": len(self.metrics),
            },
            "metrics": [m.to_dict() for m in self.metrics],
            "errors": self.errors,
            "warnings": self.warnings,
            "results_file": self.results_file,
        }


# --------------------------------------------------------------------------- evaluation


def _side_status(procs: list[runner.ProcessResult], nodeid: str) -> tuple[str, str]:
    statuses = [p.outcomes.get(nodeid) for p in procs]
    file_id = nodeid.split("::")[0]
    for p in procs:
        if p.outcomes.get(file_id) == "error":
            return "error", p.messages.get(file_id, "")
    for p, s in zip(procs, statuses, strict=True):
        if s in ("failed", "error"):
            return "error", p.messages.get(nodeid, "")
    if statuses and all(s == "skipped" for s in statuses if s is not None) and any(statuses):
        return "skipped", ""
    return "ok", ""


def _values(procs: list[runner.ProcessResult], nodeid: str, metric: str) -> dict[int, list[float]]:
    """round -> values of a scalar metric (``time`` is the per-process minimum)."""
    out: dict[int, list[float]] = {}
    for p in procs:
        b = p.benchmarks.get(nodeid)
        if not b:
            continue
        v = b.get("time") if metric == "time" else (b["metrics"].get(metric) or {}).get("value")
        if v is not None:
            out.setdefault(p.round, []).append(float(v))
    return out


def _flat(d: dict[int, list[float]]) -> list[float]:
    return [v for r in sorted(d) for v in d[r]]


def _meta(procs: list[runner.ProcessResult], nodeid: str) -> dict[str, dict[str, Any]]:
    meta: dict[str, dict[str, Any]] = {}
    for p in procs:
        b = p.benchmarks.get(nodeid)
        if not b:
            continue
        if b.get("gate_time", True) and "time" not in meta:
            meta["time"] = {"kind": "timing", "unit": "s", "higher_is_better": False}
        for name, m in b.get("metrics", {}).items():
            meta.setdefault(name, m)
    return meta


def evaluate(
    base: list[runner.ProcessResult],
    head: list[runner.ProcessResult],
    cfg: BenchConfig,
    *,
    paired: bool,
) -> tuple[list[MetricResult], list[dict[str, str]]]:
    """Decide every metric of every benchmark; errors on either side are reported, not judged."""
    names: dict[str, str] = {}
    for p in [*head, *base]:
        for nodeid, b in p.benchmarks.items():
            names.setdefault(nodeid, b.get("name", nodeid))
        for nodeid, s in p.outcomes.items():
            if s in ("failed", "error", "skipped"):  # a file that fails to import: no "::"
                names.setdefault(nodeid, nodeid.split("::", 1)[-1])
    results: list[MetricResult] = []
    errors: list[dict[str, str]] = []
    timings: list[MetricResult] = []
    derived: list[tuple[MetricResult, str]] = []
    for nodeid in sorted(names):
        name = names[nodeid]
        th = cfg.for_benchmark(name)
        sb, mb = _side_status(base, nodeid)
        sh, mh = _side_status(head, nodeid)
        if "error" in (sb, sh):
            side = "both sides" if sb == sh == "error" else ("REF" if sb == "error" else "HEAD")
            msg = mb if sb == "error" else mh
            errors.append({"benchmark": nodeid, "side": side, "message": msg})
            results.append(
                MetricResult(
                    nodeid, "-", "error", "", None, None, verdict="error", note=f"{side}: {msg}"
                )
            )
            continue
        if "skipped" in (sb, sh):
            results.append(MetricResult(nodeid, "-", "skipped", "", None, None, verdict="skipped"))
            continue
        meta = {**_meta(base, nodeid), **_meta(head, nodeid)}
        for metric, m in meta.items():
            kind = m.get("kind", "info")
            r = MetricResult(
                nodeid,
                metric,
                kind,
                m.get("unit", ""),
                None,
                None,
                higher_is_better=bool(m.get("higher_is_better")),
                threshold=th.threshold,
                alpha=th.alpha,
            )
            results.append(r)
            if kind == "accuracy":
                bv = _accuracy_values(base, nodeid)
                hv = _accuracy_values(head, nodeid)
                decide_accuracy(r, bv, hv, margin_points=th.accuracy_margin, alpha=th.alpha)
                continue
            a, b = _values(base, nodeid, metric), _values(head, nodeid, metric)
            fa, fb = _flat(a), _flat(b)
            r.n_base, r.n_head = len(fa), len(fb)
            if not fa or not fb:
                r.verdict, r.note = "undecided", "missing on one side"
                continue
            r.base, r.head = float(_median(fa)), float(_median(fb))
            if kind == "exact":
                decide_exact(r, fa, fb, th.exact_tolerance)
            elif kind == "memory":
                decide_memory(r, fa, fb, th.memory_tolerance)
            elif kind in TIMING_KINDS:
                if m.get("derived_from") and m["derived_from"] in meta:
                    derived.append((r, m["derived_from"]))
                    continue
                if paired:
                    d = paired_log_ratios(a, b, higher_is_better=r.higher_is_better)
                    r.est, r.se, r.df, r.p_value = timing_test(diffs=d)
                    r.n_base = r.n_head = len(d)
                else:
                    r.est, r.se, r.df, r.p_value = timing_test(
                        base=fa, head=fb, higher_is_better=r.higher_is_better
                    )
                timings.append(r)
            else:
                r.ratio = r.head / r.base if r.base else None
                r.verdict = "info"
                r.note = "informational, not gated"
    decide_timings(timings)
    by_key = {(r.benchmark, r.metric): r for r in timings}
    for r, src_name in derived:
        src = by_key.get((r.benchmark, src_name))
        if src is None:
            continue
        flip = r.higher_is_better  # a rate is 1/time
        r.verdict, r.p_value, r.p_holm, r.mde, r.ci_level = (
            src.verdict,
            src.p_value,
            src.p_holm,
            src.mde,
            src.ci_level,
        )
        r.n_base, r.n_head = src.n_base, src.n_head
        if src.ratio is not None:
            r.ratio = 1 / src.ratio if flip else src.ratio
        if src.ci_low is not None and src.ci_high is not None:
            r.ci_low, r.ci_high = (
                (1 / src.ci_high, 1 / src.ci_low) if flip else (src.ci_low, src.ci_high)
            )
        r.note = f"same samples as {src_name}"
    return results, errors


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _accuracy_values(procs: list[runner.ProcessResult], nodeid: str) -> list[float]:
    """Per-seed accuracy, averaged over processes (identical when training is deterministic)."""
    rows = []
    for p in procs:
        m = ((p.benchmarks.get(nodeid) or {}).get("metrics") or {}).get("accuracy")
        if m and m.get("values"):
            rows.append(m["values"])
    if not rows:
        return []
    n = min(len(r) for r in rows)
    return [sum(r[i] for r in rows) / len(rows) for i in range(n)]


# --------------------------------------------------------------------------- orchestration


@dataclass
class _Plan:
    root: Path
    suite: Path
    cfg: BenchConfig
    device: str
    harness_dir: Path
    on_event: Event

    def run(self, tree: Path, side: str, rnd: int, slot: int, nodeids: list[str] | None):
        return runner.run_suite(
            tree,
            side=side,
            round=rnd,
            slot=slot,
            head_root=self.root,
            suite=self.suite,
            harness_dir=self.harness_dir,
            device=self.device,
            markers=self.cfg.markers,
            keyword=self.cfg.keyword,
            nodeids=nodeids,
            bench_min_rounds=self.cfg.bench_min_rounds,
            bench_max_time=self.cfg.bench_max_time,
            timeout=max(120.0, self.cfg.max_time),
        )


def _suite_path(root: Path, cfg: BenchConfig) -> Path:
    suite = (root / cfg.suite).resolve()
    if not suite.exists():
        raise BadInputError(
            f"empty suite: {cfg.suite} does not exist in {root}",
            hint="create benchmarks/ with pytest-benchmark tests (see docs/benchmark.md), "
            "or set [tool.modelkit.benchmark] suite",
        )
    return suite


def _undecided(results: list[MetricResult]) -> list[str]:
    return sorted(
        {r.benchmark for r in results if r.verdict == "undecided" and r.kind in TIMING_KINDS}
    )


def _gated(procs: list[runner.ProcessResult]) -> list[str]:
    """Benchmarks with a timing metric worth re-running (not errored, not accuracy-only)."""
    out = set()
    for p in procs:
        for nodeid, b in p.benchmarks.items():
            if p.outcomes.get(nodeid) in ("failed", "error"):
                continue
            kinds = {m.get("kind") for m in b.get("metrics", {}).values()}
            if b.get("gate_time", True) or kinds & set(TIMING_KINDS):
                out.add(nodeid)
    return sorted(out)


def run_benchmark(
    *,
    root: Path,
    cfg: BenchConfig,
    device: str = "cpu",
    compare: str | None = None,
    baseline: Path | None = None,
    force: bool = False,
    processes: int = 1,
    out: Path | None = None,
    use_cache: bool = True,
    on_event: Event | None = None,
) -> Outcome:
    """Run the suite; with ``compare`` or ``baseline``, decide regressions (see module doc)."""
    if compare and baseline:
        raise BadInputError("--compare and --baseline exclude each other", hint="pick one")
    emit = on_event or (lambda _m: None)
    t_start = time.monotonic()
    suite = _suite_path(root, cfg)
    fp = harness.machine_fingerprint(device)
    git_root = None
    try:
        git_root = worktree.repo_root(root)
    except BadInputError:
        if compare:
            raise
    head = (
        worktree.head_state(git_root)
        if git_root
        else worktree.HeadState(root=root, commit=None, dirty=True, changed=[])
    )
    warnings: list[str] = []
    if head.dirty and git_root:
        warnings.append(
            f"uncommitted changes ({len(head.changed)} file(s)): HEAD's side is the working "
            "tree as it is now, not commit " + (head.commit or "?")[:12]
        )
    head_info = {"commit": head.commit, "dirty": head.dirty, "tree": str(root)}
    suite_sha = runner.suite_digest(suite, markers=cfg.markers, keyword=cfg.keyword)
    harness_dir = runner.make_harness_dir()
    plan = _Plan(root, suite, cfg, device, harness_dir, emit)
    try:
        if compare:
            outcome = _compare(plan, compare, git_root or root, head, head_info, fp, warnings)
        elif baseline:
            outcome = _against_baseline(plan, baseline, head_info, fp, warnings, force)
        else:
            outcome = _run_only(plan, head_info, fp, warnings, processes, suite_sha, use_cache)
    finally:
        shutil.rmtree(harness_dir, ignore_errors=True)
    outcome.wall_s = time.monotonic() - t_start
    head_doc = getattr(outcome, "_head_doc", None)
    if head_doc is not None:
        head_doc["modelkit"]["suite_sha256"] = suite_sha
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out, head_doc)
            outcome.results_file = str(out)
        if head.commit and not head.dirty:
            _cache_store(head.commit, suite_sha, fp, device, head_doc)
    return outcome


def _cache_path(commit: str, suite_sha: str, fp: dict[str, Any], device: str) -> Path:
    return runner.cache_dir() / f"{runner.cache_key(commit, suite_sha, fp, device)}.json"


def _cache_store(commit: str, suite_sha: str, fp: dict[str, Any], device: str, doc: dict) -> None:
    path = _cache_path(commit, suite_sha, fp, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)


def _doc(procs, info, fp, device) -> dict[str, Any]:
    return runner.results_document(
        procs,
        commit=info.get("commit"),
        dirty=bool(info.get("dirty")),
        fingerprint=fp,
        device=device,
        suite_sha256="",
    )


def _run_only(plan, head_info, fp, warnings, processes, suite_sha, use_cache) -> Outcome:
    cached = None
    if use_cache and head_info["commit"] and not head_info["dirty"]:
        path = _cache_path(head_info["commit"], suite_sha, fp, plan.device)
        if path.is_file():
            cached = json.loads(path.read_text(encoding="utf-8"))
            warnings.append(f"reused cached results for {head_info['commit'][:12]} ({path})")
    if cached is not None:
        procs = [runner.ProcessResult.from_dict(p) for p in cached["modelkit"]["processes"]]
        doc = cached
    else:
        procs = []
        for i in range(max(1, processes)):
            plan.on_event(f"run {i + 1}/{processes}: HEAD")
            procs.append(plan.run(plan.root, "head", i + 1, 0, None))
        doc = _doc(procs, head_info, fp, plan.device)
    results, errors = evaluate(procs, procs, plan.cfg, paired=False)
    for r in results:  # a run alone has no verdicts: show the values
        if r.verdict not in ("error", "skipped"):
            r.verdict, r.ratio, r.ci_low, r.ci_high, r.mde, r.p_value, r.p_holm = (
                "-",
                None,
                None,
                None,
                None,
                None,
                None,
            )
            r.base = None
    outcome = Outcome("run", head_info, None, fp, plan.cfg.to_dict(), rounds=len(procs))
    outcome.metrics, outcome.errors, outcome.warnings = results, errors, warnings
    outcome.stopped = "done"
    outcome._head_doc = doc  # type: ignore[attr-defined]
    return outcome


def _loop(
    plan: _Plan,
    trees: dict[str, Path],
    base_procs: list[runner.ProcessResult],
    paired: bool,
) -> tuple[list[runner.ProcessResult], list[runner.ProcessResult], int, str, list, list]:
    """Adaptive rounds: ABBA/BAAB (or HEAD only against a baseline) until decided or out of time."""
    cfg = plan.cfg
    t0 = time.monotonic()
    head_procs: list[runner.ProcessResult] = []
    live_base: list[runner.ProcessResult] = []
    selection: list[str] | None = None
    rnd, stopped = 0, ""
    results: list[MetricResult] = []
    errors: list[dict[str, str]] = []
    while True:
        rnd += 1
        t_round = time.monotonic()
        order = ORDERS[(rnd - 1) % 2] if paired else ("head",)
        for slot, side in enumerate(order):
            plan.on_event(
                f"round {rnd}: {'REF' if side == 'base' else 'HEAD'} ({slot + 1}/{len(order)})"
            )
            p = plan.run(trees[side], side, rnd, slot, selection)
            (live_base if side == "base" else head_procs).append(p)
        base_all = live_base if paired else base_procs
        results, errors = evaluate(base_all, head_procs, cfg, paired=paired)
        undecided = _undecided(results)
        elapsed = time.monotonic() - t0
        last = time.monotonic() - t_round
        if rnd >= cfg.min_rounds and not undecided:
            stopped = "all metrics decided"
            break
        if rnd >= cfg.max_rounds:
            stopped = f"max_rounds ({cfg.max_rounds}) reached"
            break
        if elapsed + last > cfg.max_time:
            stopped = f"time budget ({cfg.max_time:.0f}s) reached"
            break
        gated = _gated(head_procs if selection is None else head_procs[-len(order) :])
        if rnd == 1:
            selection = gated
        if rnd >= cfg.min_rounds:
            selection = undecided
        if not selection:
            stopped = "nothing left to measure"
            break
    return live_base, head_procs, rnd, stopped, results, errors


def _compare(plan, ref, git_root, head, head_info, fp, warnings) -> Outcome:
    resolved = worktree.resolve_ref(git_root, ref, head=head.commit)
    package = runner.detect_package(plan.root, plan.cfg.package)
    base_info = {"ref": ref, "commit": resolved.commit, "how": resolved.how, "package": package}
    if plan.root.resolve() != git_root.resolve():
        raise BadInputError(
            f"run --compare from the repository root ({git_root})", hint=f"cd {git_root}"
        )
    with worktree.ref_worktree(git_root, resolved.commit) as ref_tree:
        if package:
            runner.check_import(
                ref_tree,
                package,
                harness_dir=plan.harness_dir,
                label=f"REF {ref} ({resolved.commit[:12]})",
            )
            runner.check_import(plan.root, package, harness_dir=plan.harness_dir, label="HEAD")
        trees = {"base": ref_tree, "head": plan.root}
        base_procs, head_procs, rounds, stopped, results, errors = _loop(plan, trees, [], True)
    outcome = Outcome(
        "compare", head_info, base_info, fp, plan.cfg.to_dict(), rounds=rounds, stopped=stopped,
        metrics=results, errors=errors, warnings=warnings,
    )  # fmt: skip
    outcome._head_doc = _doc(head_procs, head_info, fp, plan.device)  # type: ignore[attr-defined]
    if resolved.commit and base_procs:
        doc = _doc(base_procs, {"commit": resolved.commit, "dirty": False}, fp, plan.device)
        suite_sha = runner.suite_digest(
            plan.suite, markers=plan.cfg.markers, keyword=plan.cfg.keyword
        )
        doc["modelkit"]["suite_sha256"] = suite_sha
        _cache_store(resolved.commit, suite_sha, fp, plan.device, doc)
    return outcome


def _against_baseline(plan, baseline, head_info, fp, warnings, force) -> Outcome:
    base_procs, meta = runner.load_results(baseline)
    base_fp = meta.get("fingerprint") or {}
    diffs = [
        f"{k}: {base_fp.get(k)!r} vs {fp.get(k)!r}"
        for k in harness.FINGERPRINT_KEYS
        if base_fp.get(k) != fp.get(k)
    ]
    if diffs:
        msg = f"baseline {baseline} was measured on another machine ({'; '.join(diffs)})"
        if not force:
            raise BadInputError(
                msg, hint="timings are not comparable; re-run it here or pass --force"
            )
        warnings.append(msg + " (--force)")
    if len(base_procs) < 2:
        warnings.append(
            "the baseline holds one process: timings stay undecided "
            "(record it with `modelkit benchmark --processes 5 --out FILE`)"
        )
    base_info = {"ref": str(baseline), "commit": meta.get("commit"), "how": "saved results"}
    trees = {"head": plan.root}
    _, head_procs, rounds, stopped, results, errors = _loop(plan, trees, base_procs, False)
    outcome = Outcome(
        "baseline", head_info, base_info, fp, plan.cfg.to_dict(), rounds=rounds, stopped=stopped,
        metrics=results, errors=errors, warnings=warnings,
    )  # fmt: skip
    outcome._head_doc = _doc(head_procs, head_info, fp, plan.device)  # type: ignore[attr-defined]
    return outcome


def isfinite(x: float | None) -> bool:
    """True for a finite float."""
    return x is not None and math.isfinite(x)
