"""``modelkit benchmark [--compare [REF] | --baseline FILE]``: run the suite; or interleave both
sides, decide per metric (:mod:`~modelkit.bench.deciders`), apply accepted changes
(:mod:`~modelkit.bench.accepts`) and reuse a REF side measured before (:mod:`~modelkit.bench.cache`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelkit.bench import cache, harness, runner, worktree
from modelkit.bench.accepts import accepts_from_trailers, apply_accepts, parse_accept_flag
from modelkit.bench.config import BenchConfig
from modelkit.bench.deciders import evaluate
from modelkit.bench.harness import Fingerprint
from modelkit.bench.outcome import BaseInfo, CacheHit, HeadInfo, Outcome
from modelkit.bench.plan import Event, Plan, loop, resolve_lane
from modelkit.bench.results import ProcessResult, load_results, results_document
from modelkit.bench.sides import covered_by_instructions
from modelkit.errors import BadInputError
from modelkit.io import write_json_atomic

DEFAULT_REF = "@default"  # compare against the merge-base with the default branch


@dataclass
class Context:
    """What every mode needs: the plan, HEAD's side, the machine, the suite's digest."""

    plan: Plan
    git_root: Path | None
    head: worktree.HeadState
    head_info: HeadInfo
    fp: Fingerprint
    warnings: list[str]
    suite_sha: str
    use_cache: bool

    def key(self, commit: str) -> tuple[str, dict[str, str]]:
        """The cache key of ``commit``'s results in this lane, on this machine."""
        parts = cache.key_parts(
            self.git_root or self.plan.root, commit, suite_sha=self.suite_sha,
            deps_sha=cache.dependencies_digest(self.plan.root), fingerprint=self.fp,
            lane=self.plan.lane, device=self.plan.device, isa=self.plan.cfg.instruction_isa,
        )  # fmt: skip
        return cache.key_of(parts), parts

    def document(self, procs: list[ProcessResult], commit: str | None, dirty: bool) -> dict:
        """A side's results document (a time-lane process first: its benchmark list)."""
        procs = sorted(procs, key=lambda p: p.lane != "time")
        return results_document(procs, commit=commit, dirty=dirty, fingerprint=self.fp,
                                device=self.plan.device, suite_sha256=self.suite_sha)  # fmt: skip

    def outcome(self, mode: str, base: BaseInfo | None, state: Any = None) -> Outcome:
        """An outcome of this run (rounds, verdicts and warnings from ``state``)."""
        o = Outcome(mode, self.head_info, base, self.fp, self.plan.cfg,
                    warnings=self.warnings, device=self.plan.device)  # fmt: skip
        if state is not None:
            o.rounds, o.stopped, o.metrics, o.errors = (
                state.rounds,
                state.stopped,
                state.results,
                state.errors,
            )
            o.head_doc = self.document(state.head, self.head_info.commit, self.head.dirty)
        return o


def _suite_path(root: Path, cfg: BenchConfig) -> Path:
    suite = (root / cfg.suite).resolve()
    if not suite.exists():
        raise BadInputError(
            f"empty suite: {cfg.suite} does not exist in {root}",
            hint="create benchmarks/ with pytest-benchmark tests (see docs/benchmark.md), "
            "or set [tool.modelkit.benchmark] suite",
        )
    return suite


def _head_side(root: Path, compare: str | None) -> tuple[Path | None, worktree.HeadState]:
    try:
        git_root = worktree.repo_root(root)
    except BadInputError:
        if compare:
            raise
        return None, worktree.HeadState(root=root, commit=None, dirty=True, changed=[])
    return git_root, worktree.head_state(git_root)


def _context(root: Path, cfg: BenchConfig, plan: Plan, compare: str | None, use_cache: bool):
    git_root, head = _head_side(root, compare)
    warnings: list[str] = []
    if head.dirty and git_root:
        warnings.append(
            f"uncommitted changes ({len(head.changed)} file(s)): HEAD's side is the working "
            "tree as it is now, not commit " + (head.commit or "?")[:12]
        )
    head_info = HeadInfo(head.commit, head.dirty, str(root))
    suite_sha = cache.suite_digest(plan.suite, markers=cfg.markers, keyword=cfg.keyword)
    fp = harness.machine_fingerprint(plan.device)
    return Context(plan, git_root, head, head_info, fp, warnings, suite_sha, use_cache)


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
    strict: bool = False,
) -> Outcome:
    """Run the suite; with ``compare`` (a ref, or :data:`DEFAULT_REF`) or ``baseline``, decide
    regressions. ``accept``: ``BENCH:METRIC`` changes accepted besides the commit trailers;
    ``strict``: a benchmark with nothing the gate can judge fails it."""
    if compare and baseline:
        raise BadInputError("compare and baseline exclude each other", hint="pick one")
    flag_accepts = [parse_accept_flag(a) for a in accept or []]
    lane, lane_note = resolve_lane(mode or cfg.mode, device)
    t_start = time.monotonic()
    plan = Plan(root, _suite_path(root, cfg), cfg, device, runner.make_harness_dir(),
                on_event or (lambda _m: None), lane)  # fmt: skip
    try:
        ctx = _context(root, cfg, plan, compare, use_cache)
        ctx.warnings += [lane_note] if lane_note else []
        if compare:
            outcome = _compare(ctx, compare)
        elif baseline:
            outcome = _against_baseline(ctx, baseline, force)
        else:
            outcome = _run_only(ctx, processes)
    finally:
        shutil.rmtree(plan.harness_dir, ignore_errors=True)
    outcome.lane, outcome.strict = lane, strict
    accepts = list(flag_accepts)
    if compare and ctx.git_root and outcome.base and outcome.base.commit:
        accepts += accepts_from_trailers(ctx.git_root, outcome.base.commit)
    apply_accepts(outcome, accepts)
    outcome.wall_s = time.monotonic() - t_start
    _write_head(ctx, outcome, out)
    return outcome


def _write_head(ctx: Context, outcome: Outcome, out: Path | None) -> None:
    doc = outcome.head_doc
    if doc is None:
        return
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, doc)
        outcome.results_file = str(out)
    if outcome.mode == "run" and ctx.head.commit and not ctx.head.dirty and ctx.git_root:
        key, parts = ctx.key(ctx.head.commit)
        cache.store(key, parts, doc)


def _run_only(ctx: Context, processes: int) -> Outcome:
    plan, cached = ctx.plan, None
    if ctx.use_cache and ctx.head.commit and not ctx.head.dirty and ctx.git_root:
        key, _ = ctx.key(ctx.head.commit)
        cached = cache.load(key)
    if cached is not None:
        results, path = cached
        procs, doc = list(results.modelkit.processes if results.modelkit else ()), results.raw
        ctx.warnings.append(f"reused cached results for {ctx.head.commit[:12]} ({path})")
    else:
        counted = plan.count({"head": plan.root}).head if plan.lane == "instructions" else None
        procs = [counted] if counted else []
        for i in range(max(1, processes)):
            plan.on_event(f"run {i + 1}/{processes}: HEAD")
            procs.append(plan.run(plan.root, "head", i + 1, 0, None))
        doc = ctx.document(procs, ctx.head.commit, ctx.head.dirty)
    results, errors = evaluate(procs, procs, plan.cfg, paired=False)
    for r in results:  # a run alone has no verdicts: show the values
        if r.verdict not in ("error", "skipped", "unjudged"):
            r.verdict, r.blocking, r.base = "-", "", None
            r.ratio = r.ci_low = r.ci_high = r.mde = r.p_value = r.p_holm = None
    outcome = ctx.outcome("run", None)
    outcome.rounds, outcome.metrics, outcome.errors = len(procs), results, errors
    outcome.stopped, outcome.head_doc = "done", doc
    return outcome


def _resolve(ctx: Context, ref: str) -> tuple[worktree.ResolvedRef, str]:
    root = ctx.git_root or ctx.plan.root
    if ctx.plan.root.resolve() != root.resolve():
        raise BadInputError(
            f"run the comparison from the repository root ({root})", hint=f"cd {root}"
        )
    name = ref
    if ref == DEFAULT_REF:
        name = worktree.default_branch(root)
    return worktree.resolve_ref(root, name, head=ctx.head.commit), name


@dataclass(frozen=True)
class Reused:
    """REF's side read from the cache: its callgrind counts, its first time-lane process, and
    the cache entry."""

    base: ProcessResult
    base_round1: ProcessResult
    key: str
    path: Path


def _cached_base(ctx: Context, commit: str) -> Reused | None:
    """REF's callgrind counts and first time-lane round from the cache (instruction lane)."""
    if not ctx.use_cache or ctx.plan.lane != "instructions":
        return None
    key, _ = ctx.key(commit)
    found = cache.load(key)
    if found is None:
        return None
    results, path = found
    procs = list(results.modelkit.processes if results.modelkit else ())
    counted = [p for p in procs if p.lane == "instructions"]
    timed = [p for p in procs if p.lane == "time"]
    if not counted or not timed:
        return None
    for p in procs:
        p.cached = True
    return Reused(counted[0], timed[0], key, path)


def _measure_sides(ctx: Context, ref_tree: Path, reused: Reused | None):
    plan = ctx.plan
    trees = {"base": ref_tree, "head": plan.root}
    counted = None
    if plan.lane == "instructions":
        todo = {"head": plan.root} if reused else trees
        counted = plan.count(todo)
        if reused:
            counted = replace(counted, base=reused.base, base_round1=reused.base_round1)
    return loop(plan, trees, paired=True, counted=counted)


def _compare(ctx: Context, ref: str) -> Outcome:
    plan = ctx.plan
    resolved, name = _resolve(ctx, ref)
    package = runner.detect_package(plan.root, plan.cfg.package)
    how = resolved.how + (" (the default branch)" if ref == DEFAULT_REF else "")
    reused = _cached_base(ctx, resolved.commit)
    with worktree.ref_worktree(ctx.git_root or plan.root, resolved.commit) as ref_tree:
        if package:
            label = f"REF {name} ({resolved.commit[:12]})"
            runner.check_import(ref_tree, package, harness_dir=plan.harness_dir, label=label)
            runner.check_import(plan.root, package, harness_dir=plan.harness_dir, label="HEAD")
        state = _measure_sides(ctx, ref_tree, reused)
    base = BaseInfo(name, resolved.commit, how, package=package)
    if reused:
        base = replace(base, from_cache=CacheHit(reused.key, str(reused.path)))
    elif plan.lane == "instructions" and len(state.base) >= 2:
        key, parts = ctx.key(resolved.commit)
        doc = ctx.document(state.base[:2], resolved.commit, False)
        base = replace(base, stored_in_cache=str(cache.store(key, parts, doc)))
    return ctx.outcome("compare", base, state)


def _against_baseline(ctx: Context, baseline: Path, force: bool) -> Outcome:
    plan = ctx.plan
    base_procs, meta = load_results(baseline)
    base_fp = meta.fingerprint
    diffs = [f"{k}: {getattr(base_fp, k)!r} vs {getattr(ctx.fp, k)!r}"
             for k in harness.FINGERPRINT_KEYS if getattr(base_fp, k) != getattr(ctx.fp, k)]  # fmt: skip
    if diffs:
        msg = f"baseline {baseline} was measured on another machine ({'; '.join(diffs)})"
        if not force:
            raise BadInputError(
                msg, hint="timings are not comparable; re-run it here or pass --force"
            )
        ctx.warnings.append(msg + " (--force)")
    if len(base_procs) < 2:
        ctx.warnings.append(
            "the baseline holds one process: timings stay undecided "
            "(record it with `modelkit benchmark --processes 5 --out FILE`)"
        )
    base_info = BaseInfo(str(baseline), meta.commit, "saved results", saved=True)
    counted = None
    if plan.lane == "instructions":
        if not covered_by_instructions(base_procs):
            ctx.warnings.append(
                f"baseline {baseline} holds no instruction counts (record it "
                "with `modelkit benchmark --mode instructions --out FILE`)"
            )
        counted = plan.count({"head": plan.root})
    state = loop(plan, {"head": plan.root}, paired=False, saved_base=base_procs, counted=counted)
    return ctx.outcome("baseline", base_info, state)


def base_cache_key(
    *, root: Path, cfg: BenchConfig, device: str, compare: str, mode: str | None = None
) -> str:
    """The cache key REF's results would be stored under (CI keys ``actions/cache`` by it)."""
    lane, _ = resolve_lane(mode or cfg.mode, device)
    plan = Plan(root, _suite_path(root, cfg), cfg, device, Path(), lambda _m: None, lane)
    ctx = _context(root, cfg, plan, compare, True)
    resolved, _ = _resolve(ctx, compare)
    return ctx.key(resolved.commit)[0]
