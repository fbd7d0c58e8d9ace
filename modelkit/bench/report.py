"""Reports of a benchmark outcome: table rows (for the terminal), Markdown (PR comment), JSON."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from modelkit.bench.outcome import Outcome
from modelkit.bench.stats import MetricResult
from modelkit.io import write_json_atomic

COLUMNS = ["benchmark", "metric", "lane", "base", "head", "ratio [CI]", "MDE", "verdict"]
LANES = {
    "instructions": "instructions (callgrind)",
    "time": "time",
    "exact": "exact",
    "memory": "memory",
    "accuracy": "accuracy",
    "quality": "quality",
    "info": "info",
}
ISA_NOTE = {"sse4": "capped at SSE4 (instruction_isa)", "native": "the machine's own"}
MARKER = "<!-- modelkit-benchmark -->"
ICONS = {
    "regression": "🔴 regression",
    "improvement": "🟢 improvement",
    "unchanged": "⚪ unchanged",
    "undecided": "🟡 undecided",
    "error": "❌ error",
    "skipped": "⏭ skipped",
    "info": "ℹ info (not gated)",
    "unjudged": "❔ nothing to judge",
}


def _num(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if unit == "s":
        for scale, u in ((1, "s"), (1e3, "ms"), (1e6, "µs")):
            if abs(v) * scale >= 1:
                return f"{v * scale:.3g} {u}"
        return f"{v * 1e9:.3g} ns"
    if unit == "bytes":
        return f"{v / 2**20:.2f} MiB"
    if unit == "fraction":
        return f"{v * 100:.2f}%"
    if unit == "instr/call":
        return f"{v:,.0f}"
    if abs(v) >= 1000:
        return f"{v:,.0f}{' ' + unit if unit else ''}"
    return f"{v:.4g}{' ' + unit if unit else ''}"


def _ratio(m: MetricResult) -> str:
    if m.kind == "accuracy":
        if m.est is None:
            return "-"
        ci = f" [{m.ci_low:+.2f}, …]" if m.ci_low is not None else ""
        return f"{m.est:+.2f} pts{ci}"
    if m.kind == "quality":
        if m.est is None:
            return "-"
        ci = f" [{m.ci_low:+.4g}, {m.ci_high:+.4g}]" if m.ci_low is not None else ""
        return f"{m.est:+.4g}{ci}"
    if m.ratio is None or not math.isfinite(m.ratio):
        return "-"
    if m.kind == "instructions":
        return f"{m.ratio:.4f} ({(m.ratio - 1) * 100:+.2f}%)"
    if m.ci_low is not None and m.ci_high is not None:
        return f"{m.ratio:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
    return f"{m.ratio:.3f}"


def _mde(m: MetricResult) -> str:
    if m.mde is None or not math.isfinite(m.mde):
        return "-"
    if m.kind == "accuracy":
        return f"±{m.mde:.2f} pts"
    if m.kind == "quality":
        return f"±{m.mde:.3g}"
    if m.kind == "instructions":
        return f"≥{m.mde * 100:.2g}%"  # the threshold: counts are deterministic
    return f"{m.mde * 100:.1f}%"


def _short(name: str) -> str:
    return name.split("::", 1)[-1]


def _verdict(m: MetricResult) -> str:
    if m.accepted:
        return f"{m.verdict} (accepted)"
    return f"{m.verdict} (blocks: beyond threshold)" if m.blocking else m.verdict


def rows(outcome: Outcome) -> list[list[str]]:
    """One row per metric: benchmark, metric, lane (what decided it), base, head, ratio [CI],
    MDE, verdict."""
    out = []
    for m in outcome.metrics:
        if m.kind in ("error", "skipped", "unjudged"):
            out.append(
                [
                    _short(m.benchmark),
                    *["-"] * 6,
                    m.verdict + (f" ({m.note})" if m.note else ""),
                ]
            )
            continue
        out.append(
            [
                _short(m.benchmark),
                m.metric,
                LANES.get(m.lane, m.lane or "-"),
                _num(m.base, m.unit),
                _num(m.head, m.unit),
                _ratio(m),
                _mde(m),
                _verdict(m),
            ]
        )
    return out


def accepted_lines(outcome: Outcome) -> list[str]:
    """One line per accepted change: what changed, by how much, and who accepted it."""
    out = []
    for m in outcome.accepted:
        out.append(
            f"accepted: {_short(m.benchmark)} {m.metric} {m.verdict} {_ratio(m)} ({m.accepted})"
        )
    return out


def headline(outcome: Outcome) -> str:
    """One line: what was compared and the overall result."""
    base = outcome.base
    head = (outcome.head.commit or "working tree")[:12] + (
        " (+uncommitted)" if outcome.head.dirty else ""
    )
    against = ""
    if base is not None:
        cached = "; REF results reused from the cache" if base.from_cache else ""
        against = f" vs {base.ref} ({(base.commit or '?')[:12]}, {base.how}{cached})"
    n_reg = len(outcome.regressions)
    n_und = sum(m.verdict == "undecided" for m in outcome.metrics)
    status = {
        "regression": f"{n_reg} regression(s)",
        "undecided": f"{len(outcome.blocked)} change(s) beyond the threshold left undecided",
        "unjudged": f"{len(outcome.unjudged)} benchmark(s) with nothing to judge (strict)",
        "error": f"{len(outcome.errors)} benchmark error(s)",
        "ok": "no regression",
    }[outcome.status]
    undecided = f", {n_und} undecided" if n_und else ""
    n_acc = len(outcome.accepted)
    accepted = f", {n_acc} accepted change(s)" if n_acc else ""
    lane = {"instructions": "instruction lane", "time": "time lane"}.get(outcome.lane, outcome.lane)
    return (
        f"HEAD {head}{against}: {status}{accepted}{undecided} "
        f"({lane}; {outcome.rounds} round(s), {outcome.wall_s:.0f}s; {outcome.stopped}; "
        f"{outcome.gpu_lane})"
    )


def markdown(outcome: Outcome) -> str:
    """A Markdown report for a sticky PR comment (starts with a stable marker line)."""
    fp = outcome.fingerprint
    lines = [
        MARKER,
        f"### modelkit benchmark: {outcome.status.upper()}",
        "",
        headline(outcome),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r, m in zip(rows(outcome), outcome.metrics, strict=True):
        icon = "✅ accepted " + m.verdict if m.accepted else ICONS.get(m.verdict, m.verdict)
        why = m.note if m.kind in ("error", "skipped", "unjudged") and m.note else ""
        why = why or (f"blocks: {m.blocking}" if m.blocking and not m.accepted else "")
        r = [*r[:-1], icon + (f" ({why})" if why else "")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    if outcome.accepted:
        lines += ["", "**Accepted changes** (not failing the gate):"]
        lines += [
            f"- `{_short(m.benchmark)}` {m.metric}: {m.verdict} {_ratio(m)} — {m.accepted}"
            for m in outcome.accepted
        ]
    if outcome.errors:
        lines += ["", "**Errors** (a benchmark failing on one side is an error, not a regression):"]
        lines += [f"- `{e.benchmark}` on {e.side}: {e.message}" for e in outcome.errors]
    if outcome.reasons():
        lines += ["", "**Why the gate says no** besides regressions:"]
        lines += [f"- {r}" for r in outcome.reasons()]
    if outcome.warnings:
        lines += ["", *[f"> ⚠ {w}" for w in outcome.warnings]]
    lines += ["", f"_{outcome.gpu_lane}._"]
    cfg = outcome.config.thresholds
    lines += [
        "",
        f"<sub>lane = what decided the metric: instructions (callgrind instructions per call, "
        f"deterministic, flagged at ≥ {cfg.instr_threshold}; MKL/oneDNN kernels: "
        f"{ISA_NOTE[outcome.config.instruction_isa]}), time (timing statistics), "
        f"exact, memory, accuracy, info (reported, not gated). "
        f"ratio = HEAD/REF with its {'Holm-adjusted ' if outcome.base else ''}confidence "
        f"interval; MDE = smallest slowdown detectable with 95% power at these samples. "
        f"threshold {cfg.threshold}, alpha {cfg.alpha}, accuracy margin "
        f"{cfg.accuracy_margin} pts. Machine: {fp.cpu_model} × {fp.cpu_count}"
        f", GPU {fp.gpu or '-'} ({fp.gpu_clocks or '-'}, driver "
        f"{fp.driver or '-'}), valgrind {fp.valgrind or '-'}, torch {fp.torch}, "
        f"CUDA {fp.cuda or '-'}, device {fp.device}.</sub>",
    ]
    return "\n".join(lines) + "\n"


def write_reports(
    outcome: Outcome, *, md: Path | None, json_path: Path | None, step_summary: bool = True
) -> list[str]:
    """Write the Markdown/JSON reports asked for; append Markdown to $GITHUB_STEP_SUMMARY."""
    written = []
    text = markdown(outcome)
    if md is not None:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text, encoding="utf-8")
        written.append(str(md))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_path, outcome.to_dict())
        written.append(str(json_path))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary and summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(text + "\n")
        written.append(summary)
    return written


def as_json(outcome: Outcome) -> dict[str, Any]:
    """The JSON report."""
    return outcome.to_dict()
