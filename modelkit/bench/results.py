"""What a side's process measured (:class:`ProcessResult`), and results files: one
pytest-benchmark–format JSON per side with modelkit's per-process data, readable by
``pytest-benchmark compare``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.bench import harness
from modelkit.errors import BadInputError

RESULTS_FORMAT = 2


@dataclass
class ProcessResult:
    """What one process measured: per benchmark, the per-process median time and the metrics."""

    side: str
    round: int
    slot: int
    seconds: float
    returncode: int
    lane: str = "time"
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    collected: list[str] = field(default_factory=list)
    doc: dict[str, Any] | None = None  # the pytest-benchmark JSON document
    cached: bool = False  # read from the results cache, not measured by this compare

    def to_dict(self, *, with_doc: bool = False) -> dict[str, Any]:
        """JSON-ready form (the pytest-benchmark document only when asked)."""
        d = {
            "side": self.side,
            "round": self.round,
            "slot": self.slot,
            "seconds": round(self.seconds, 3),
            "returncode": self.returncode,
            "lane": self.lane,
            "benchmarks": self.benchmarks,
            "outcomes": self.outcomes,
            "messages": self.messages,
            "collected": self.collected,
            "cached": self.cached,
        }
        if with_doc:
            d["doc"] = self.doc
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcessResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            side=d.get("side", "base"),
            round=int(d.get("round", 0)),
            slot=int(d.get("slot", 0)),
            seconds=float(d.get("seconds", 0.0)),
            returncode=int(d.get("returncode", 0)),
            lane=str(d.get("lane", "time")),
            benchmarks=d.get("benchmarks", {}),
            outcomes=d.get("outcomes", {}),
            messages=d.get("messages", {}),
            collected=d.get("collected", []),
            doc=d.get("doc"),
            cached=bool(d.get("cached", False)),
        )


def summarise_doc(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """pytest-benchmark JSON -> {fullname: {name, time (min s), gate_time, metrics, raw}}.

    A process's timing sample is the minimum of its rounds: on a shared machine noise only adds
    time, and the minimum varies ~4% between processes where the median varies ~40% (measured
    on the 2-core CI machine), so the gate's interval is an order of magnitude tighter."""
    out: dict[str, dict[str, Any]] = {}
    for b in doc.get("benchmarks", []):
        stats = b.get("stats") or {}
        extra = b.get("extra_info") or {}
        cuda = extra.get("modelkit_cuda_event_s")  # CUDA lane: event times replace the host timer
        out[b["fullname"]] = {
            "name": b.get("name", b["fullname"]),
            "time": min(cuda) if cuda else stats.get("min"),
            "gate_time": bool(extra.get("modelkit_gate_time", True)),
            "metrics": extra.get(harness.EXTRA_KEY, {}),
            "raw": cuda or stats.get("data", []),
        }
    return out


def add_recorded_only(
    benchmarks: dict[str, dict[str, Any]], outcomes_metrics: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Tests that recorded metrics without timing anything are absent from pytest-benchmark's
    JSON: add them from the harness's outcomes file (their metrics, no time)."""
    out = dict(benchmarks)
    for nodeid, metrics in outcomes_metrics.items():
        if nodeid not in out:
            name = nodeid.split("::")[-1]
            out[nodeid] = {"name": name, "time": None, "gate_time": False, "metrics": metrics,
                           "raw": []}  # fmt: skip
    return out


def instruction_only(benchmarks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Of a process under callgrind keep only the instruction counts (its wall times, memory
    and the rest are meaningless there; the time lane's processes measure those)."""
    out = {}
    for nodeid, b in benchmarks.items():
        metrics = {k: m for k, m in b["metrics"].items() if m.get("kind") == "instructions"}
        out[nodeid] = {**b, "time": None, "gate_time": False, "raw": [], "metrics": metrics}
    return out


def suite_digest(suite: Path, *, markers: str | None, keyword: str | None) -> str:
    """sha256 over the suite's files and selection (a cache key part)."""
    h = hashlib.sha256()
    files = [suite] if suite.is_file() else sorted(p for p in suite.rglob("*") if p.is_file())
    for p in files:
        if "__pycache__" in p.parts:
            continue
        h.update(str(p.relative_to(suite if suite.is_dir() else suite.parent)).encode())
        h.update(p.read_bytes())
    h.update(f"m={markers}|k={keyword}|h={harness_digest()}".encode())
    return h.hexdigest()


def harness_digest() -> str:
    """sha256 of the harness's own source (what measures is part of what was measured)."""
    h = hashlib.sha256()
    for p in sorted(Path(harness.__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def fingerprint_digest(fp: dict[str, Any]) -> str:
    """sha256 of the fingerprint fields that matter for timings."""
    key = {k: fp.get(k) for k in harness.FINGERPRINT_KEYS}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def results_document(
    processes: list[ProcessResult],
    *,
    commit: str | None,
    dirty: bool,
    fingerprint: dict[str, Any],
    device: str,
    suite_sha256: str,
) -> dict[str, Any]:
    """One pytest-benchmark–format JSON for a side: stats over every process's raw samples
    (readable by ``pytest-benchmark compare``), plus a ``modelkit`` section with per-process data."""
    from pytest_benchmark.stats import Stats

    first = next((p.doc for p in processes if p.doc), None) or {}
    doc = {k: v for k, v in first.items() if k != "benchmarks"}
    doc.setdefault("machine_info", {})["modelkit"] = fingerprint
    benchmarks = []
    for b in first.get("benchmarks", []):
        data: list[float] = []
        for p in processes:
            data += (p.benchmarks.get(b["fullname"]) or {}).get("raw", [])
        entry = dict(b)
        if data:
            s = Stats()
            for v in data:
                s.update(v)
            entry["stats"] = {**s.as_dict(), "data": data, "iterations": b["stats"]["iterations"]}
        benchmarks.append(entry)
    doc["benchmarks"] = benchmarks
    doc["modelkit"] = {
        "format": RESULTS_FORMAT,
        "commit": commit,
        "dirty": dirty,
        "device": device,
        "fingerprint": fingerprint,
        "suite_sha256": suite_sha256,
        "processes": [p.to_dict() for p in processes],
    }
    return doc


def load_results(path: Path) -> tuple[list[ProcessResult], dict[str, Any]]:
    """Read a results file (modelkit's, or a plain pytest-benchmark JSON as one process)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(
            f"baseline file {path} not found", hint="write one with `modelkit benchmark --out`"
        ) from None
    except (OSError, ValueError) as exc:
        raise BadInputError(
            f"cannot read baseline {path}: {exc}", hint="pass a JSON file"
        ) from None
    if not isinstance(doc, dict) or "benchmarks" not in doc:
        raise BadInputError(
            f"{path} is not a benchmark results file",
            hint="pass a file from `modelkit benchmark --out` or pytest-benchmark --benchmark-json",
        )
    mk = doc.get("modelkit")
    if mk:
        procs = [ProcessResult.from_dict(p) for p in mk.get("processes", [])]
        for p in procs:
            p.side = "base"
        return procs, mk
    proc = ProcessResult("base", 1, 0, 0.0, 0, benchmarks=summarise_doc(doc), doc=doc)
    proc.outcomes = {name: "passed" for name in proc.benchmarks}
    fp = (doc.get("machine_info") or {}).get("modelkit") or {}
    commit = (doc.get("commit_info") or {}).get("id")
    return [proc], {"fingerprint": fp, "commit": commit, "dirty": None}


def merge_processes(parts: list[ProcessResult]) -> ProcessResult:
    """One side's process result from processes that each ran some of the suite's files."""
    first = parts[0]
    merged = ProcessResult(
        first.side, first.round, first.slot, max(p.seconds for p in parts),
        max(p.returncode for p in parts), lane=first.lane,
    )  # fmt: skip
    docs = [p.doc for p in parts if p.doc]
    if docs:
        merged.doc = {**docs[0], "benchmarks": [b for d in docs for b in d.get("benchmarks", [])]}
    for p in parts:
        merged.benchmarks.update(p.benchmarks)
        merged.outcomes.update(p.outcomes)
        merged.messages.update(p.messages)
        merged.collected += p.collected
    return merged
