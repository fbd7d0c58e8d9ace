"""The measuring plan: which lane runs, how a side's processes are started, and the adaptive
rounds that interleave both sides until every timing is decided or the budget is spent.

* ``time``: round r runs REF, HEAD, HEAD, REF (ABBA; odd rounds BAAB), each in a fresh process
  running the suite with a few pytest-benchmark rounds; each process's minimum is one sample.
* ``instructions`` (``auto`` picks it on CPU when valgrind is installed): each side's suite runs
  under callgrind, split over the cores (:func:`~modelkit.bench.runner.run_instruction_sides`);
  then one time-lane process per side measures what callgrind cannot (accuracy, memory; wall
  time as information), and benchmarks without an instruction count fall back to timed rounds.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelkit.bench import runner, sides
from modelkit.bench.config import BenchConfig
from modelkit.bench.deciders import TIMING_KINDS, evaluate
from modelkit.bench.outcome import BenchError
from modelkit.bench.results import ProcessResult
from modelkit.bench.stats import MetricResult
from modelkit.errors import BadInputError

Event = Callable[[str], None]
ORDERS = (("base", "head", "head", "base"), ("head", "base", "base", "head"))
ORDERS_AB = (("base", "head"), ("head", "base"))  # instruction lane: timings are a fallback
MODES = ("auto", "instructions", "time")


def valgrind_usable() -> tuple[bool, str]:
    """Whether the instruction lane can run here, and why not."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False, f"the instruction lane needs x86-64 Linux (this is {platform.machine()})"
    if shutil.which("valgrind") is None:
        return False, "valgrind is not installed"
    return True, ""


def resolve_lane(mode: str, device: str) -> tuple[str, str | None]:
    """The lane that runs for ``mode``, and a one-line note when ``auto`` fell back to time."""
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
class Plan:
    """How this gate measures: HEAD's suite, the harness copy, the device and the lane."""

    root: Path
    suite: Path
    cfg: BenchConfig
    device: str
    harness_dir: Path
    on_event: Event
    lane: str = "time"

    def how(self, lane: str) -> runner.SuiteRun:
        """The process settings for a lane (callgrind runs ~5x slower, ~50x where it counts)."""
        cfg = self.cfg
        timeout = (
            max(900.0, 3 * cfg.max_time) if lane == "instructions" else max(120.0, cfg.max_time)
        )
        return runner.SuiteRun(
            self.root, self.suite, self.harness_dir, self.device, cfg.markers, cfg.keyword,
            cfg.bench_min_rounds, cfg.bench_max_time, timeout, cfg.instruction_isa,
        )  # fmt: skip

    def run(self, tree: Path, side: str, rnd: int, slot: int, nodeids: list[str] | None):
        """One time-lane process of a side."""
        return runner.run_suite(
            tree, self.how("time"), side=side, round=rnd, slot=slot, nodeids=nodeids
        )

    def count(self, trees: dict[str, Path]) -> Counted:
        """The instruction lane's callgrind processes for these sides, across the cores."""
        names = " and ".join("REF" if s == "base" else "HEAD" for s in trees)
        self.on_event(f"instructions: {names} under callgrind")
        jobs = [(tree, side) for side, tree in trees.items()]
        by_side = runner.run_instruction_sides(
            jobs, self.how("instructions"), workers=os.cpu_count() or 1
        )
        return Counted(**by_side)


@dataclass(frozen=True)
class Counted:
    """The instruction lane's callgrind result per side; ``base_round1`` is REF's first
    time-lane process when REF's side was read from the cache (it stands in for round 1)."""

    base: ProcessResult | None = None
    head: ProcessResult | None = None
    base_round1: ProcessResult | None = None


@dataclass
class Rounds:
    """The state of the adaptive rounds (see :func:`loop`)."""

    base: list[ProcessResult] = field(default_factory=list)
    head: list[ProcessResult] = field(default_factory=list)
    rounds: int = 0
    stopped: str = ""
    results: list[MetricResult] = field(default_factory=list)
    errors: list[BenchError] = field(default_factory=list)


def _undecided(results: list[MetricResult]) -> list[str]:
    return sorted(
        {r.benchmark for r in results if r.verdict == "undecided" and r.kind in TIMING_KINDS}
    )


def _gated(procs: list[ProcessResult], covered: set[str]) -> list[str]:
    """Benchmarks with a timing metric worth re-running (not errored, not accuracy-only, not
    decided by instruction counts)."""
    out = set()
    for p in procs:
        for nodeid, b in p.benchmarks.items():
            if p.outcomes.get(nodeid) in ("failed", "error") or nodeid in covered:
                continue
            kinds = {m.kind for m in b.metrics.values()}
            if (b.gate_time and b.time is not None) or kinds & set(TIMING_KINDS):
                out.add(nodeid)
    return sorted(out)


def _stop_reason(plan: Plan, state: Rounds, t0: float, last: float) -> str:
    cfg = plan.cfg
    if state.rounds >= cfg.min_rounds and not _undecided(state.results):
        return "all metrics decided"
    if state.rounds >= cfg.max_rounds:
        return f"max_rounds ({cfg.max_rounds}) reached"
    if time.monotonic() - t0 + last > cfg.max_time:
        return f"time budget ({cfg.max_time:.0f}s) reached"
    return ""


def loop(
    plan: Plan,
    trees: dict[str, Path],
    *,
    paired: bool,
    saved_base: list[ProcessResult] | None = None,
    counted: Counted | None = None,
) -> Rounds:
    """Adaptive rounds: ABBA/BAAB (or HEAD only against ``saved_base``) until decided or out
    of time. ``counted``: the instruction lane's callgrind results per side; their benchmarks
    are timed once per side (AB/BA) for accuracy, memory and wall time as information. A
    ``counted.base_round1`` (REF read from the cache) stands in for REF's first round."""
    preset = counted.base_round1 if counted else None
    state = Rounds(base=[counted.base] if counted and counted.base else [],
                   head=[counted.head] if counted and counted.head else [])  # fmt: skip
    covered = sides.covered_by_instructions(state.head) & sides.covered_by_instructions(
        state.base or saved_base or []
    )
    orders = ORDERS_AB if counted else ORDERS
    selection: list[str] | None = None
    t0 = time.monotonic()
    while True:
        state.rounds += 1
        t_round = time.monotonic()
        order = orders[(state.rounds - 1) % 2] if paired else ("head",)
        for slot, side in enumerate(order):
            if side == "base" and preset is not None and state.rounds == 1:
                state.base.append(preset)
                continue
            plan.on_event(f"round {state.rounds}: {'REF' if side == 'base' else 'HEAD'} "
                          f"({slot + 1}/{len(order)})")  # fmt: skip
            p = plan.run(trees[side], side, state.rounds, slot, selection)
            (state.base if side == "base" else state.head).append(p)
        base_all = state.base if paired else (saved_base or [])
        state.results, state.errors = evaluate(base_all, state.head, plan.cfg, paired=paired)
        state.stopped = _stop_reason(plan, state, t0, time.monotonic() - t_round)
        if state.stopped:
            return state
        recent = state.head if selection is None else state.head[-len(order) :]
        selection = _gated(recent, covered) if state.rounds == 1 else selection
        if state.rounds >= plan.cfg.min_rounds:
            selection = _undecided(state.results)
        if not selection:
            state.stopped = (
                "decided by instruction counts" if covered else "nothing left to measure"
            )
            return state
