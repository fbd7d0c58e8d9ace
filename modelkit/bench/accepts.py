"""Accepted changes: ``Benchmark-Accept: <benchmark> <metric> [reason]`` trailers in the commits
between REF and HEAD, or ``--accept BENCH:METRIC``.

A benchmark names its test literally, brackets included (``test_train_step[mnist-mlp]``), or
its node id, or its name without parameters (``test_train_step`` covers every parametrisation);
``*`` is the only wildcard (any run of characters). The metric the same way.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelkit.bench import worktree
from modelkit.bench.stats import MetricResult
from modelkit.errors import BadInputError

ACCEPT_TRAILER = "Benchmark-Accept"
MALFORMED = "expected '<benchmark> <metric> [reason]'"


@dataclass(frozen=True)
class Accept:
    """An accepted change: which benchmark and metric (patterns), why, and where it was said
    (a commit's trailer or ``--accept``); ``malformed`` says why a trailer was ignored."""

    benchmark: str
    metric: str
    reason: str = ""
    source: str = "--accept"
    malformed: str | None = None

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form (the report's ``accepts``)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_accept_flag(text: str) -> Accept:
    """``BENCH:METRIC`` -> an accept (``*`` may stand for any run of characters)."""
    bench, sep, metric = text.rpartition(":")
    if not sep or not bench.strip() or not metric.strip():
        raise BadInputError(
            f"accept {text!r}: expected BENCH:METRIC",
            hint="e.g. 'test_train_step[mnist-mlp]:instructions' ('*' is the only wildcard)",
        )
    return Accept(bench.strip(), metric.strip())


def parse_trailer(value: str, *, commit: str) -> Accept | None:
    """``<benchmark> <metric> [reason]`` -> an accept (None when malformed)."""
    parts = value.strip().split(None, 2)
    if len(parts) < 2:
        return None
    reason = parts[2] if len(parts) > 2 else ""
    return Accept(parts[0], parts[1], reason, f"{ACCEPT_TRAILER} in {commit[:12]}")


def accepts_from_trailers(git_root: Path, base_commit: str) -> list[Accept]:
    """``Benchmark-Accept`` trailers of the commits in ``base_commit..HEAD`` (git's own trailer
    parser: ``git log --format=%(trailers:key=...,valueonly)``)."""
    fmt = f"%H%x1f%(trailers:key={ACCEPT_TRAILER},valueonly,separator=%x1f)%x1e"
    out = worktree.git_output(git_root, "log", f"--format={fmt}", f"{base_commit}..HEAD")
    accepts: list[Accept] = []
    for record in out.split("\x1e"):
        fields_ = [f.strip() for f in record.strip().split("\x1f")]
        if len(fields_) < 2:
            continue
        commit, values = fields_[0], [v for v in fields_[1:] if v]
        for v in values:
            a = parse_trailer(v, commit=commit)
            accepts.append(a or Accept("", "", v, commit[:12], malformed=MALFORMED))
    return accepts


def name_matches(pattern: str, name: str) -> bool:
    """``pattern`` equals ``name`` literally, where ``*`` stands for any run of characters
    (brackets, ``?`` and the rest are literal)."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name) is not None


def matches(accept: Accept, m: MetricResult) -> bool:
    """Whether an accept covers this metric row."""
    short = m.benchmark.split("::", 1)[-1]
    pattern = accept.benchmark
    bench_ok = (
        any(name_matches(pattern, name) for name in (short, m.benchmark))
        or short.split("[", 1)[0] == pattern
    )
    return bench_ok and name_matches(accept.metric, m.metric)


def apply_accepts(outcome: Any, accepts: list[Accept]) -> None:
    """Mark the changed metrics (regression, improvement, or undecided beyond the threshold)
    an accept covers; warn about accepts that are malformed or cover nothing."""
    outcome.accepts = accepts
    for a in accepts:
        if a.malformed:
            outcome.warnings.append(
                f"ignored {ACCEPT_TRAILER} {a.reason!r} ({a.source}): {a.malformed}"
            )
            continue
        hit = False
        for m in outcome.metrics:
            changed = m.verdict in ("regression", "improvement") or m.blocking
            if changed and matches(a, m):
                m.accepted = a.source + (f": {a.reason}" if a.reason else "")
                hit = True
        if not hit:
            outcome.warnings.append(
                f"accept {a.benchmark} {a.metric} ({a.source}) matched no changed metric"
            )
