"""``modelkit benchmark [--compare REF | --baseline FILE]``: run the suite, interleave both sides,
decide per metric, stop early when decided, within a time budget.

Two lanes (``--mode``):

* ``time``: round r runs REF, HEAD, HEAD, REF (ABBA; odd rounds BAAB), each in a fresh process
  running the suite with a few pytest-benchmark rounds; each process's minimum is one sample.
* ``instructions`` (``auto`` picks it on CPU when valgrind is installed): each side runs its whole
  suite once under callgrind; the benchmarks that count instructions are decided on their
  instructions per call (deterministic: a relative threshold). Then one time-lane process per
  side measures what callgrind cannot (accuracy, memory; wall time as information), and
  benchmarks without an instruction count fall back to timed rounds.

Accepted changes: ``Benchmark-Accept: <benchmark> <metric> [reason]`` trailers in the commits
between REF and HEAD, or ``--accept BENCH:METRIC``; an accepted regression is listed apart and
does not fail the gate (exit 0); any other regression exits 3.
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
    decide_instructions,
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
ORDERS_AB = (("base", "head"), ("head", "base"))  # instruction lane: timings are a fallback
MODES = ("auto", "instructions", "time")
ACCEPT_TRAILER = "Benchmark-Accept"


def valgrind_usable() -> tuple[bool, str]:
    """Whether the instruction lane can run here, and why not."""
    import platform
    import sys

    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False, f"the instruction lane needs x86-64 Linux (this is {platform.machine()})"
    if shutil.which("valgrind") is None:
        return False, "valgrind is not installed"
    return True, ""


def resolve_lane(mode: str, device: str) -> tuple[str, str | None]:
    """``--mode`` -> the lane that runs, and a one-line note when ``auto`` fell back to time."""
    if mode not in MODES:
        raise BadInputError(f"unknown --mode '{mode}'", hint=f"use one of: {', '.join(MODES)}")
    cuda = device.startswith("cuda")
    if mode == "instructions":
        if cuda:
            raise BadInputError(
                "--mode instructions counts CPU instructions: not for --device cuda",
                hint="use --mode time (CUDA events) on a GPU",
            )
        ok, why = valgrind_usable()
        if not ok:
            raise BadInputError(
                f"--mode instructions: {why}",
                hint="install valgrind (apt-get install valgrind) or use --mode time",
            )
        return "instructions", None
    if mode == "time" or cuda:
        return "time", None
    ok, why = valgrind_usable()
    if ok:
        return "instructions", None
    return "time", f"{why}: timing lane (install valgrind for deterministic instruction counts)"


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
    lane: str = "time"
    accepts: list[dict[str, str]] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricResult]:
        """Metrics judged a regression and not accepted."""
        return [m for m in self.metrics if m.verdict == "regression" and not m.accepted]

    @property
    def accepted(self) -> list[MetricResult]:
        """Changed metrics an accept (trailer or --accept) covers."""
        return [m for m in self.metrics if m.accepted]

    @property
    def exit_code(self) -> int:
        """0 no regression (or only accepted ones), 3 regression, 1 a benchmark errored."""
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
            "lane": self.lane,
            "head": self.head,
            "base": self.base,
            "fingerprint": self.fingerprint,
            "config": self.config,
            "rounds": self.rounds,
            "wall_s": round(self.wall_s, 2),
            "stopped": self.stopped,
            "summary": {
                "regressions": len(self.regressions),
                "accepted": len(self.accepted),
                "undecided": len(undecided),
                "errors": len(self.errors),
                "metrics": len(self.metrics),
            },
            "metrics": [m.to_dict() for m in self.metrics],
            "errors": self.errors,
            "warnings": self.warnings,
            "accepts": self.accepts,
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
        return "skipped", next((p.messages.get(nodeid, "") for p in procs), "")
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
    """Decide every metric of every benchmark; errors on either side are reported, not judged.

    A benchmark with an instruction count on both sides is decided by it; its timings are then
    information (``lane="info"``)."""
    covered = covered_by_instructions(base) & covered_by_instructions(head)
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
            why = mh if sh == "skipped" else mb
            results.append(
                MetricResult(nodeid, "-", "skipped", "", None, None, verdict="skipped", note=why)
            )
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
                r.lane = "accuracy"
                continue
            a, b = _values(base, nodeid, metric), _values(head, nodeid, metric)
            fa, fb = _flat(a), _flat(b)
            r.n_base, r.n_head = len(fa), len(fb)
            if not fa or not fb:
                r.verdict, r.note = "undecided", "missing on one side"
                continue
            r.base, r.head = float(_median(fa)), float(_median(fb))
            r.lane = kind if kind in ("exact", "memory") else "info"
            if kind == "instructions":
                spread = max(_spreads(base, nodeid, metric) + _spreads(head, nodeid, metric))
                decide_instructions(r, fa, fb, th.instr_threshold, spread=spread)
            elif kind == "exact":
                decide_exact(r, fa, fb, th.exact_tolerance)
            elif kind == "memory":
                decide_memory(r, fa, fb, th.memory_tolerance)
            elif kind in TIMING_KINDS and nodeid in covered:
                ratio = r.head / r.base if r.base else None
                r.ratio = ratio
                r.verdict = "info"
                r.note = "wall time, information only: instructions per call decide"
            elif kind in TIMING_KINDS:
                r.lane = "time"
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


def covered_by_instructions(procs: list[runner.ProcessResult]) -> set[str]:
    """Benchmarks with an instruction count in these processes."""
    return {
        nodeid
        for p in procs
        for nodeid, b in p.benchmarks.items()
        if any(m.get("kind") == "instructions" for m in b.get("metrics", {}).values())
    }


def _spreads(procs: list[runner.ProcessResult], nodeid: str, metric: str) -> list[float]:
    out = [0.0]
    for p in procs:
        m = ((p.benchmarks.get(nodeid) or {}).get("metrics") or {}).get(metric) or {}
        out.append(float(m.get("spread") or 0.0))
    return out


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
    lane: str = "time"

    def run(
        self,
        tree: Path,
        side: str,
        rnd: int,
        slot: int,
        nodeids: list[str] | None,
        lane: str = "time",
    ) -> runner.ProcessResult:
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
            # callgrind runs the suite ~5x slower uninstrumented, ~50x where it counts
            timeout=max(900.0, 3 * self.cfg.max_time)
            if lane == "instructions"
            else max(120.0, self.cfg.max_time),
            lane=lane,
        )

    def count(self, tree: Path, side: str) -> runner.ProcessResult:
        """The instruction lane's one callgrind process for a side (round 0)."""
        self.on_event(f"instructions: {'REF' if side == 'base' else 'HEAD'} under callgrind")
        return self.run(tree, side, 0, 0, None, lane="instructions")


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


def _gated(procs: list[runner.ProcessResult], covered: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Benchmarks with a timing metric worth re-running (not errored, not accuracy-only, not
    decided by instruction counts)."""
    out = set()
    for p in procs:
        for nodeid, b in p.benchmarks.items():
            if p.outcomes.get(nodeid) in ("failed", "error") or nodeid in covered:
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
    mode: str | None = None,
    accept: list[str] | None = None,
) -> Outcome:
    """Run the suite; with ``compare`` or ``baseline``, decide regressions (see module doc).

    ``mode``: instructions | time | auto (default: the config's ``mode``); ``accept``:
    ``BENCH:METRIC`` changes accepted in addition to the ``Benchmark-Accept`` trailers."""
    if compare and baseline:
        raise BadInputError("--compare and --baseline exclude each other", hint="pick one")
    flag_accepts = [parse_accept_flag(a) for a in accept or []]
    lane, lane_note = resolve_lane(mode or cfg.mode, device)
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
    warnings: list[str] = [lane_note] if lane_note else []
    if head.dirty and git_root:
        warnings.append(
            f"uncommitted changes ({len(head.changed)} file(s)): HEAD's side is the working "
            "tree as it is now, not commit " + (head.commit or "?")[:12]
        )
    head_info = {"commit": head.commit, "dirty": head.dirty, "tree": str(root)}
    suite_sha = runner.suite_digest(suite, markers=cfg.markers, keyword=cfg.keyword)
    harness_dir = runner.make_harness_dir()
    plan = _Plan(root, suite, cfg, device, harness_dir, emit, lane)
    try:
        if compare:
            outcome = _compare(plan, compare, git_root or root, head, head_info, fp, warnings)
        elif baseline:
            outcome = _against_baseline(plan, baseline, head_info, fp, warnings, force)
        else:
            outcome = _run_only(plan, head_info, fp, warnings, processes, suite_sha, use_cache)
    finally:
        shutil.rmtree(harness_dir, ignore_errors=True)
    outcome.lane = lane
    accepts = list(flag_accepts)
    if compare and git_root and outcome.base and outcome.base.get("commit"):
        accepts += accepts_from_trailers(git_root, outcome.base["commit"])
    apply_accepts(outcome, accepts)
    outcome.wall_s = time.monotonic() - t_start
    head_doc = getattr(outcome, "_head_doc", None)
    if head_doc is not None:
        head_doc["modelkit"]["suite_sha256"] = suite_sha
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out, head_doc)
            outcome.results_file = str(out)
        if head.commit and not head.dirty:
            _cache_store(head.commit, suite_sha, fp, device, head_doc, lane)
    return outcome


def _cache_path(
    commit: str, suite_sha: str, fp: dict[str, Any], device: str, lane: str = "time"
) -> Path:
    key = runner.cache_key(commit, suite_sha, fp, device + ("" if lane == "time" else f"/{lane}"))
    return runner.cache_dir() / f"{key}.json"


def _cache_store(
    commit: str, suite_sha: str, fp: dict[str, Any], device: str, doc: dict, lane: str = "time"
) -> None:
    path = _cache_path(commit, suite_sha, fp, device, lane)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)


def _doc(procs, info, fp, device) -> dict[str, Any]:
    # a time-lane process first: the document's benchmark list and stats come from it
    procs = sorted(procs, key=lambda p: p.lane != "time")
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
        path = _cache_path(head_info["commit"], suite_sha, fp, plan.device, plan.lane)
        if path.is_file():
            cached = json.loads(path.read_text(encoding="utf-8"))
            warnings.append(f"reused cached results for {head_info['commit'][:12]} ({path})")
    if cached is not None:
        procs = [runner.ProcessResult.from_dict(p) for p in cached["modelkit"]["processes"]]
        doc = cached
    else:
        procs = [plan.count(plan.root, "head")] if plan.lane == "instructions" else []
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
    counted: dict[str, runner.ProcessResult] | None = None,
) -> tuple[list[runner.ProcessResult], list[runner.ProcessResult], int, str, list, list]:
    """Adaptive rounds: ABBA/BAAB (or HEAD only against a baseline) until decided or out of time.

    ``counted``: the instruction lane's callgrind process per side; the benchmarks they decide
    are timed once per side (AB/BA rounds) for accuracy, memory and wall time as information."""
    cfg = plan.cfg
    t0 = time.monotonic()
    counted = counted or {}
    extra_base = [counted["base"]] if "base" in counted else []
    head_procs: list[runner.ProcessResult] = [counted["head"]] if "head" in counted else []
    live_base: list[runner.ProcessResult] = list(extra_base)
    covered = covered_by_instructions(head_procs) & covered_by_instructions(
        extra_base or base_procs
    )
    orders = ORDERS_AB if counted else ORDERS
    selection: list[str] | None = None
    rnd, stopped = 0, ""
    results: list[MetricResult] = []
    errors: list[dict[str, str]] = []
    while True:
        rnd += 1
        t_round = time.monotonic()
        order = orders[(rnd - 1) % 2] if paired else ("head",)
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
        gated = _gated(head_procs if selection is None else head_procs[-len(order) :], covered)
        if rnd == 1:
            selection = gated
        if rnd >= cfg.min_rounds:
            selection = undecided
        if not selection:
            stopped = "decided by instruction counts" if covered else "nothing left to measure"
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
        counted = None
        if plan.lane == "instructions":
            # both sides at once: a count does not depend on the load (measured: A/A identical),
            # and callgrind is ~50x slower than the native run, so this halves the gate's time
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=2) as pool:
                fb = pool.submit(plan.count, ref_tree, "base")
                fh = pool.submit(plan.count, plan.root, "head")
                counted = {"base": fb.result(), "head": fh.result()}
        base_procs, head_procs, rounds, stopped, results, errors = _loop(
            plan, trees, [], True, counted
        )
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
        _cache_store(resolved.commit, suite_sha, fp, plan.device, doc, plan.lane)
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
    counted = None
    if plan.lane == "instructions":
        if not covered_by_instructions(base_procs):
            warnings.append(
                f"baseline {baseline} holds no instruction counts (record it with "
                "`modelkit benchmark --mode instructions --out FILE`): timings decide"
            )
        counted = {"head": plan.count(plan.root, "head")}
    _, head_procs, rounds, stopped, results, errors = _loop(plan, trees, base_procs, False, counted)
    outcome = Outcome(
        "baseline", head_info, base_info, fp, plan.cfg.to_dict(), rounds=rounds, stopped=stopped,
        metrics=results, errors=errors, warnings=warnings,
    )  # fmt: skip
    outcome._head_doc = _doc(head_procs, head_info, fp, plan.device)  # type: ignore[attr-defined]
    return outcome


def isfinite(x: float | None) -> bool:
    """True for a finite float."""
    return x is not None and math.isfinite(x)


# --------------------------------------------------------------------------- accepted changes


def parse_accept_flag(text: str) -> dict[str, str]:
    """``--accept BENCH:METRIC`` -> an accept (``BENCH`` may be a glob; METRIC ``*`` = any)."""
    bench, sep, metric = text.rpartition(":")
    if not sep or not bench.strip() or not metric.strip():
        raise BadInputError(
            f"--accept {text!r}: expected BENCH:METRIC",
            hint="e.g. --accept 'test_train_step[mnist-mlp]:instructions' (BENCH may be a glob)",
        )
    return {
        "benchmark": bench.strip(),
        "metric": metric.strip(),
        "reason": "",
        "source": "--accept",
    }


def parse_trailer(value: str, *, commit: str) -> dict[str, str] | None:
    """``<benchmark> <metric> [reason]`` -> an accept (None when malformed)."""
    parts = value.strip().split(None, 2)
    if len(parts) < 2:
        return None
    return {
        "benchmark": parts[0],
        "metric": parts[1],
        "reason": parts[2] if len(parts) > 2 else "",
        "source": f"{ACCEPT_TRAILER} in {commit[:12]}",
    }


def accepts_from_trailers(git_root: Path, base_commit: str) -> list[dict[str, str]]:
    """``Benchmark-Accept`` trailers of the commits in ``base_commit..HEAD`` (git's own trailer
    parser: ``git log --format=%(trailers:key=...,valueonly)``)."""
    fmt = f"%H%x1f%(trailers:key={ACCEPT_TRAILER},valueonly,separator=%x1f)%x1e"
    out = worktree.git_output(git_root, "log", f"--format={fmt}", f"{base_commit}..HEAD")
    accepts: list[dict[str, str]] = []
    for record in out.split("\x1e"):
        fields_ = [f.strip() for f in record.strip().split("\x1f")]
        if len(fields_) < 2:
            continue
        commit, values = fields_[0], [v for v in fields_[1:] if v]
        for v in values:
            a = parse_trailer(v, commit=commit)
            if a is None:
                a = {"benchmark": "", "metric": "", "reason": v, "source": commit[:12]}
                a["malformed"] = "expected '<benchmark> <metric> [reason]'"
            accepts.append(a)
    return accepts


def _matches(accept: dict[str, str], m: MetricResult) -> bool:
    import fnmatch

    short = m.benchmark.split("::", 1)[-1]
    bench_ok = (
        any(fnmatch.fnmatchcase(name, accept["benchmark"]) for name in (short, m.benchmark))
        or short.split("[", 1)[0] == accept["benchmark"]
    )
    return bench_ok and fnmatch.fnmatchcase(m.metric, accept["metric"])


def apply_accepts(outcome: Outcome, accepts: list[dict[str, str]]) -> None:
    """Mark the changed metrics (regression or improvement) an accept covers; warn about
    accepts that are malformed or cover nothing."""
    outcome.accepts = accepts
    for a in accepts:
        if a.get("malformed"):
            outcome.warnings.append(
                f"ignored {ACCEPT_TRAILER} {a['reason']!r} ({a['source']}): {a['malformed']}"
            )
            continue
        hit = False
        for m in outcome.metrics:
            if m.verdict in ("regression", "improvement") and _matches(a, m):
                m.accepted = f"{a['source']}" + (f": {a['reason']}" if a.get("reason") else "")
                hit = True
        if not hit:
            outcome.warnings.append(
                f"accept {a['benchmark']} {a['metric']} ({a['source']}) matched no changed metric"
            )
