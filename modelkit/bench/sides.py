"""What each side's processes measured for one benchmark: its status, the metrics it
recorded and their values (the deciders' inputs)."""

from __future__ import annotations

import statistics

from modelkit.bench.harness import JUDGED_KINDS
from modelkit.bench.results import TIME, MetricRecord, ProcessResult

Procs = list[ProcessResult]
TIME_METRIC = "time"  # the timed call's metric (a process's minimum time), beside recorded ones


def benchmark_names(base: Procs, head: Procs) -> dict[str, str]:
    """node id -> test name, for every benchmark either side ran, skipped or failed on, and
    every test that passed without recording anything (so none goes missing)."""
    names: dict[str, str] = {}
    for p in [*head, *base]:
        for nodeid, b in p.benchmarks.items():
            names.setdefault(nodeid, b.name)
        for nodeid, s in p.outcomes.items():
            if s in ("failed", "error", "skipped") or "::" in nodeid:
                names.setdefault(nodeid, nodeid.split("::", 1)[-1])
    return names


def side_status(procs: Procs, nodeid: str) -> tuple[str, str]:
    """``ok`` | ``error`` | ``skipped`` for one side, with the reason."""
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


def metric_meta(base: Procs, head: Procs, nodeid: str) -> dict[str, MetricRecord]:
    """metric name -> how it was recorded (kind, unit, direction), HEAD's over REF's."""
    meta: dict[str, MetricRecord] = {}
    for procs in (base, head):
        for p in procs:
            b = p.benchmarks.get(nodeid)
            if not b:
                continue
            if b.gate_time and b.time is not None:
                meta.setdefault(TIME_METRIC, TIME)
            meta.update(b.metrics)
    return meta


def judged(meta: dict[str, MetricRecord]) -> bool:
    """True when at least one metric is of a kind the gate decides."""
    return any(m.kind in JUDGED_KINDS for m in meta.values())


def values_by_round(
    procs: Procs, nodeid: str, metric: str, *, fresh_only: bool = False
) -> dict[int, list[float]]:
    """round -> values of a scalar metric (``time`` is the per-process minimum).
    ``fresh_only``: leave out processes read from the cache (a time is never compared
    against one measured in another session)."""
    out: dict[int, list[float]] = {}
    for p in procs:
        b = p.benchmarks.get(nodeid)
        if not b or (fresh_only and p.cached):
            continue
        m = b.metrics.get(metric)
        v = b.time if metric == TIME_METRIC else (m.value if m else None)
        if v is not None:
            out.setdefault(p.round, []).append(float(v))
    return out


def _recorded(p: ProcessResult, nodeid: str, metric: str) -> MetricRecord | None:
    """What one process recorded for one metric of one benchmark."""
    b = p.benchmarks.get(nodeid)
    return b.metrics.get(metric) if b else None


def flat(by_round: dict[int, list[float]]) -> list[float]:
    """The values of every round, in round order."""
    return [v for r in sorted(by_round) for v in by_round[r]]


def spreads(procs: Procs, nodeid: str, metric: str) -> list[float]:
    """The within-process relative spreads of repeated instruction counts (0 when none)."""
    out = [0.0]
    for p in procs:
        m = _recorded(p, nodeid, metric)
        out.append(float(m.spread or 0.0) if m else 0.0)
    return out


def seed_values(procs: Procs, nodeid: str, metric: str) -> list[float]:
    """A quality metric's per-seed values averaged over processes (identical when training
    is deterministic); a scalar metric gives one value, the median over processes."""
    rows, scalars = [], []
    for p in procs:
        m = _recorded(p, nodeid, metric)
        if m and m.values:
            rows.append(m.values)
        elif m and m.value is not None:
            scalars.append(float(m.value))
    if rows:
        n = min(len(r) for r in rows)
        return [sum(r[i] for r in rows) / len(rows) for i in range(n)]
    return [statistics.median(scalars)] if scalars else []


def covered_by_instructions(procs: Procs) -> set[str]:
    """Benchmarks with an instruction count in these processes."""
    return {
        nodeid
        for p in procs
        for nodeid, b in p.benchmarks.items()
        if any(m.kind == "instructions" for m in b.metrics.values())
    }
