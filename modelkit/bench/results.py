"""What a side's process measured (:class:`ProcessResult`), and results files: one
pytest-benchmark–format JSON per side with modelkit's per-process data, readable by
``pytest-benchmark compare``.

Every document the gate reads back is read here, once, into typed objects (:func:`read_record`):
pytest-benchmark's JSON (:class:`BenchmarkDoc`, also a saved ``--baseline`` and a cached side),
the harness's outcomes file (:class:`OutcomesFile`) and the metrics a benchmark recorded with
``bench.record``/``bench.metric`` (:class:`MetricRecord`). The harness writes them (it imports
nothing of modelkit: its process runs the other side's code); the rest of the gate uses fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic.types import AllowInfNan

from modelkit.bench import harness
from modelkit.bench.harness import Fingerprint
from modelkit.errors import BadInputError
from modelkit.runs.typed import read_typed, to_plain

RESULTS_FORMAT = 2
T = TypeVar("T")
# a recorded value may be NaN or infinite (a diverged loss is a measurement, not a corrupt file)
Number = Annotated[float, AllowInfNan(True)]


def read_record(cls: type[T], data: Any, *, source: str, where: str = "") -> T:
    """``data`` (parsed JSON) as ``cls`` (:func:`~modelkit.runs.typed.read_typed`); a wrong
    type is a :class:`BadInputError` naming ``source`` and the dotted key."""
    return read_typed(cls, data, source=source, error=BadInputError, where=where)


@dataclass(frozen=True)
class MetricRecord:
    """One metric a benchmark recorded (the harness's ``Recorder.record``): its kind (how the
    gate decides it), unit, direction, a value or one value per seed, and for some kinds a
    ``derived_from`` time, a ``margin`` or the ``spread`` of repeated instruction counts."""

    kind: str = "info"
    unit: str = ""
    higher_is_better: bool | None = None
    value: Number | None = None
    values: list[Number] | None = None
    derived_from: str | None = None
    margin: Number | None = None
    spread: Number | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


TIME = MetricRecord(kind="timing", unit="s")  # the timed call's ``time``, as a metric


@dataclass(frozen=True)
class Summary:
    """One benchmark in one process: its per-process time (the minimum of its rounds), whether
    that time is gated, the metrics it recorded and the raw timing samples."""

    name: str
    time: float | None = None
    gate_time: bool = True
    metrics: dict[str, MetricRecord] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list, metadata={"key": "raw"})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (as stored per process in a results file)."""
        return {"name": self.name, "time": self.time, "gate_time": self.gate_time,
                "metrics": {k: to_plain(m) for k, m in self.metrics.items()},
                "raw": self.samples}  # fmt: skip


@dataclass(frozen=True)
class BenchStats:
    """The ``stats`` of a pytest-benchmark entry the gate uses."""

    min: float | None = None
    iterations: int | None = None
    data: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class ExtraInfo:
    """A pytest-benchmark entry's ``extra_info``: what the harness recorded."""

    metrics: dict[str, MetricRecord] = field(
        default_factory=dict, metadata={"key": harness.EXTRA_KEY}
    )
    cuda_event_s: list[float] | None = field(
        default=None, metadata={"key": "modelkit_cuda_event_s"}
    )
    gate_time: bool = field(default=True, metadata={"key": "modelkit_gate_time"})


@dataclass(frozen=True)
class BenchEntry:
    """One entry of a pytest-benchmark JSON's ``benchmarks``."""

    fullname: str
    name: str | None = None
    stats: BenchStats | None = None
    extra_info: ExtraInfo | None = field(default=None)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class MachineInfo:
    """pytest-benchmark's ``machine_info``, with modelkit's fingerprint under ``modelkit``."""

    fingerprint: Fingerprint | None = field(default=None, metadata={"key": harness.EXTRA_KEY})
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class CommitInfo:
    """pytest-benchmark's ``commit_info``."""

    id: str | None = None


@dataclass
class ProcessResult:
    """What one process measured: per benchmark, the per-process median time and the metrics."""

    side: str = "base"
    round: int = 0
    slot: int = 0
    seconds: float = 0.0
    returncode: int = 0
    lane: str = "time"
    benchmarks: dict[str, Summary] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    collected: list[str] = field(default_factory=list)
    doc: BenchmarkDoc | None = field(default=None)  # pytest-benchmark's JSON
    cached: bool = False  # read from the results cache, not measured by this compare

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (as stored in a results file's ``modelkit.processes``)."""
        return {
            "side": self.side,
            "round": self.round,
            "slot": self.slot,
            "seconds": round(self.seconds, 3),
            "returncode": self.returncode,
            "lane": self.lane,
            "benchmarks": {k: b.to_dict() for k, b in self.benchmarks.items()},
            "outcomes": self.outcomes,
            "messages": self.messages,
            "collected": self.collected,
            "cached": self.cached,
        }


@dataclass(frozen=True)
class ResultsMeta:
    """The ``modelkit`` section of a results file: what was measured, where, and by which
    processes."""

    format: int | None = None
    commit: str | None = None
    dirty: bool | None = None
    device: str | None = None
    fingerprint: Fingerprint = field(default_factory=Fingerprint)
    suite_sha256: str | None = None
    processes: tuple[ProcessResult, ...] = field(default=())


@dataclass(frozen=True)
class BenchmarkDoc:
    """A pytest-benchmark JSON document (a side's results; modelkit's adds ``modelkit``)."""

    benchmarks: tuple[BenchEntry, ...] = field(default=())
    machine_info: MachineInfo | None = None
    commit_info: CommitInfo | None = None
    modelkit: ResultsMeta | None = field(default=None)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class OutcomesFile:
    """The harness's outcomes file (``harness/outcomes.py``): every test's outcome and reason,
    and every metric recorded, tests that never timed anything included."""

    harness: str | None = None
    exitstatus: int | None = None
    collected: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, MetricRecord]] = field(default_factory=dict)
    seconds: float | None = None


def read_json(cls: type[T], path: Path) -> T:
    """A JSON file the gate's processes wrote, read as ``cls``."""
    return read_record(cls, json.loads(Path(path).read_text(encoding="utf-8")), source=str(path))


def summarise_doc(doc: BenchmarkDoc) -> dict[str, Summary]:
    """pytest-benchmark JSON -> {fullname: its :class:`Summary`}.

    A process's timing sample is the minimum of its rounds: on a shared machine noise only adds
    time, and the minimum varies ~4% between processes where the median varies ~40% (measured
    on the 2-core CI machine), so the gate's interval is an order of magnitude tighter."""
    out: dict[str, Summary] = {}
    for b in doc.benchmarks:
        stats, extra = b.stats or BenchStats(), b.extra_info or ExtraInfo()
        cuda = extra.cuda_event_s  # CUDA lane: event times replace the host timer
        out[b.fullname] = Summary(
            name=b.fullname if b.name is None else b.name,
            time=min(cuda) if cuda else stats.min,
            gate_time=extra.gate_time,
            metrics=extra.metrics,
            samples=cuda or stats.data,
        )
    return out


def add_recorded_only(
    benchmarks: dict[str, Summary], outcomes_metrics: dict[str, dict[str, MetricRecord]]
) -> dict[str, Summary]:
    """Tests that recorded metrics without timing anything are absent from pytest-benchmark's
    JSON: add them from the harness's outcomes file (their metrics, no time)."""
    out = dict(benchmarks)
    for nodeid, metrics in outcomes_metrics.items():
        if nodeid not in out:
            out[nodeid] = Summary(nodeid.split("::")[-1], None, False, metrics, [])
    return out


def instruction_only(benchmarks: dict[str, Summary]) -> dict[str, Summary]:
    """Of a process under callgrind keep only the instruction counts (its wall times, memory
    and the rest are meaningless there; the time lane's processes measure those)."""
    return {
        nodeid: replace(b, time=None, gate_time=False, samples=[], metrics={
            k: m for k, m in b.metrics.items() if m.kind == "instructions"})
        for nodeid, b in benchmarks.items()
    }  # fmt: skip


def results_document(
    processes: list[ProcessResult],
    *,
    commit: str | None,
    dirty: bool,
    fingerprint: Fingerprint,
    device: str,
    suite_sha256: str,
) -> dict[str, Any]:
    """One pytest-benchmark–format JSON for a side: stats over every process's raw samples
    (readable by ``pytest-benchmark compare``), plus a ``modelkit`` section with per-process data."""
    from pytest_benchmark.stats import Stats

    first = next((p.doc for p in processes if p.doc), None) or BenchmarkDoc()
    doc = {k: v for k, v in first.raw.items() if k != "benchmarks"}
    machine = first.machine_info.raw if first.machine_info else {}
    doc["machine_info"] = {**machine, "modelkit": fingerprint.as_dict()}
    benchmarks = []
    for b in first.benchmarks:
        data: list[float] = []
        for p in processes:
            summary = p.benchmarks.get(b.fullname)
            data += summary.samples if summary else []
        entry = dict(b.raw)
        if data:
            s = Stats()
            for v in data:
                s.update(v)
            iterations = b.stats.iterations if b.stats else None
            entry["stats"] = {**s.as_dict(), "data": data, "iterations": iterations}
        benchmarks.append(entry)
    doc["benchmarks"] = benchmarks
    doc["modelkit"] = {
        "format": RESULTS_FORMAT,
        "commit": commit,
        "dirty": dirty,
        "device": device,
        "fingerprint": fingerprint.as_dict(),
        "suite_sha256": suite_sha256,
        "processes": [p.to_dict() for p in processes],
    }
    return doc


def load_results(path: Path) -> tuple[list[ProcessResult], ResultsMeta]:
    """Read a results file (modelkit's, or a plain pytest-benchmark JSON as one process)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(
            f"baseline file {path} not found", hint="write one with `modelkit benchmark --out`"
        ) from None
    except (OSError, ValueError) as exc:
        raise BadInputError(
            f"cannot read baseline {path}: {exc}", hint="pass a JSON file"
        ) from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise BadInputError(
            f"{path} is not a benchmark results file",
            hint="pass a file from `modelkit benchmark --out` or pytest-benchmark --benchmark-json",
        )
    doc = read_record(BenchmarkDoc, data, source=str(path))
    if doc.modelkit is not None:
        procs = list(doc.modelkit.processes)
        for p in procs:
            p.side = "base"
        return procs, doc.modelkit
    proc = ProcessResult("base", 1, 0, 0.0, 0, benchmarks=summarise_doc(doc), doc=doc)
    proc.outcomes = {name: "passed" for name in proc.benchmarks}
    fp = doc.machine_info.fingerprint if doc.machine_info else None
    commit = doc.commit_info.id if doc.commit_info else None
    return [proc], ResultsMeta(fingerprint=fp or Fingerprint(), commit=commit)


def merge_processes(parts: list[ProcessResult]) -> ProcessResult:
    """One side's process result from processes that each ran some of the suite's files."""
    first = parts[0]
    merged = ProcessResult(
        first.side, first.round, first.slot, max(p.seconds for p in parts),
        max(p.returncode for p in parts), lane=first.lane,
    )  # fmt: skip
    docs = [p.doc for p in parts if p.doc]
    if docs:
        entries = tuple(b for d in docs for b in d.benchmarks)
        raw = {**docs[0].raw, "benchmarks": [b.raw for b in entries]}
        merged.doc = replace(docs[0], benchmarks=entries, raw=raw)
    for p in parts:
        merged.benchmarks.update(p.benchmarks)
        merged.outcomes.update(p.outcomes)
        merged.messages.update(p.messages)
        merged.collected += p.collected
    return merged
