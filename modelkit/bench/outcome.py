"""The result of ``modelkit benchmark``: every metric with its verdict, what was compared, and
the exit code that follows from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from modelkit.bench.accepts import Accept
from modelkit.bench.config import BenchConfig
from modelkit.bench.harness import Fingerprint
from modelkit.bench.stats import MetricResult
from modelkit.errors import EXIT_CHECK_FAILED, EXIT_FAILURE, EXIT_OK

GPU_NOT_RUN = "GPU lane not run"


@dataclass(frozen=True)
class HeadInfo:
    """HEAD's side: its commit, whether the working tree had uncommitted changes, the tree."""

    commit: str | None
    dirty: bool
    tree: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the report's ``head``)."""
        return asdict(self)


@dataclass(frozen=True)
class CacheHit:
    """REF's results read from the cache: the key and the file."""

    key: str
    path: str


@dataclass(frozen=True)
class BaseInfo:
    """What HEAD was compared against: a ref (``--compare``) or saved results (``--baseline``,
    ``saved``), its commit and how it was resolved; for a ref, the package checked to import
    and whether REF's results came from (or went into) the cache."""

    ref: str
    commit: str | None
    how: str
    saved: bool = False
    package: str | None = None
    from_cache: CacheHit | None = None
    stored_in_cache: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the report's ``base``)."""
        out: dict[str, Any] = {"ref": self.ref, "commit": self.commit, "how": self.how}
        if not self.saved:
            out["package"] = self.package
            out["from_cache"] = asdict(self.from_cache) if self.from_cache else None
        if self.stored_in_cache is not None:
            out["stored_in_cache"] = self.stored_in_cache
        return out


@dataclass(frozen=True)
class BenchError:
    """A benchmark that failed (or failed to import) on one side or both: not a regression."""

    benchmark: str
    side: str  # REF | HEAD | both sides
    message: str


@dataclass
class Outcome:
    """Metrics with verdicts, and what was compared."""

    mode: str  # run | compare | baseline
    head: HeadInfo
    base: BaseInfo | None
    fingerprint: Fingerprint
    config: BenchConfig
    rounds: int = 0
    wall_s: float = 0.0
    stopped: str = ""
    metrics: list[MetricResult] = field(default_factory=list)
    errors: list[BenchError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    results_file: str | None = None
    lane: str = "time"
    accepts: list[Accept] = field(default_factory=list)
    strict: bool = False
    device: str = "cpu"
    head_doc: dict[str, Any] | None = None  # HEAD's results document (for --out and the cache)

    @property
    def regressions(self) -> list[MetricResult]:
        """Metrics judged a regression and not accepted."""
        return [m for m in self.metrics if m.verdict == "regression" and not m.accepted]

    @property
    def blocked(self) -> list[MetricResult]:
        """Undecided metrics whose estimate is worse than the threshold (not accepted)."""
        return [m for m in self.metrics if m.blocking and not m.accepted]

    @property
    def unjudged(self) -> list[MetricResult]:
        """Benchmarks that recorded nothing the gate can judge."""
        return [m for m in self.metrics if m.verdict == "unjudged"]

    @property
    def accepted(self) -> list[MetricResult]:
        """Changed metrics an accept (trailer or --accept) covers."""
        return [m for m in self.metrics if m.accepted]

    @property
    def exit_code(self) -> int:
        """3: a regression, an undecided change beyond its threshold, or (strict) a benchmark
        with nothing to judge; 1: a benchmark errored; else 0."""
        if self.regressions or self.blocked or (self.strict and self.unjudged):
            return EXIT_CHECK_FAILED
        return EXIT_FAILURE if self.errors else EXIT_OK

    @property
    def status(self) -> str:
        """regression | undecided | unjudged | error | ok."""
        if self.regressions:
            return "regression"
        if self.blocked:
            return "undecided"
        if self.strict and self.unjudged:
            return "unjudged"
        return "error" if self.errors else "ok"

    @property
    def gpu_lane(self) -> str:
        """What the report says about the CUDA lane."""
        if self.device.startswith("cuda"):
            return f"run on {self.fingerprint.gpu or self.device}"
        return f"{GPU_NOT_RUN} (this run measured on {self.device})"

    def reasons(self) -> list[str]:
        """One line per cause of a non-zero exit besides regressions and errors."""
        lines = [f"undecided beyond threshold: {m.benchmark.split('::', 1)[-1]} {m.metric}: "
                 f"{m.blocking}" for m in self.blocked]  # fmt: skip
        if self.strict:
            lines += [f"unjudged (--strict): {m.benchmark.split('::', 1)[-1]}: {m.note}"
                      for m in self.unjudged]  # fmt: skip
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        undecided = [m for m in self.metrics if m.verdict == "undecided"]
        return {
            "status": self.status, "exit_code": self.exit_code, "mode": self.mode,
            "lane": self.lane, "head": self.head.to_dict(),
            "base": self.base.to_dict() if self.base else None,
            "fingerprint": self.fingerprint.as_dict(), "config": self.config.to_dict(),
            "rounds": self.rounds,
            "wall_s": round(self.wall_s, 2), "stopped": self.stopped,
            "gpu_lane": self.gpu_lane, "strict": self.strict,
            "summary": {
                "regressions": len(self.regressions), "accepted": len(self.accepted),
                "undecided": len(undecided), "blocking": len(self.blocked),
                "unjudged": len(self.unjudged), "errors": len(self.errors),
                "metrics": len(self.metrics),
            },
            "reasons": self.reasons(),
            "metrics": [m.to_dict() for m in self.metrics],
            "errors": [asdict(e) for e in self.errors], "warnings": self.warnings,
            "accepts": [a.to_dict() for a in self.accepts],
            "results_file": self.results_file,
        }  # fmt: skip
