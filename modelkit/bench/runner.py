"""Run the suite in a fresh process against one tree, and read what it measured.

Each run is ``python -m pytest <HEAD's suite>`` with ``PYTHONPATH=<tree>[/src]:<harness>`` and
the working directory at that tree, so the code under test is imported from that tree, never
from whatever is installed; the suite files always come from HEAD's tree; the harness (the
fixtures of :mod:`modelkit.bench.plugin`) is one copy shared by both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.bench import plugin as harness
from modelkit.errors import BadInputError, ModelkitError

HARNESS_MODULE = "_modelkit_bench_plugin"
RESULTS_FORMAT = 1


def make_harness_dir() -> Path:
    """A temp folder holding one importable copy of the harness plugin."""
    d = Path(tempfile.mkdtemp(prefix="modelkit-bench-harness-"))
    shutil.copyfile(harness.__file__, d / f"{HARNESS_MODULE}.py")
    return d


ENV_PAD = "MODELKIT_BENCH_PAD"
ENV_SIZE = 1 << 16  # the instruction lane pads every side's environment to this many bytes


def _env_bytes(env: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())


def side_env(
    tree: Path,
    harness_dir: Path,
    device: str,
    outcomes: Path | None,
    *,
    lane: str = "time",
    callgrind_out: Path | None = None,
) -> dict[str, str]:
    """The environment of a side's process: its own tree first on the path, nothing inherited.

    Time lane: the environment's size is random per process (layout becomes noise, not bias).
    Instruction lane: padded to the same total size on both sides, so the two trees' path
    lengths cannot shift the stack and change a count (measured: 3 KB more environment moved
    an MLP step's count by 0.01%)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    paths = [str(p) for p in (tree / "src", tree) if p.is_dir()] + [str(harness_dir)]
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONHASHSEED="0",
        MODELKIT_BENCH_DEVICE=device,
    )
    # Randomise the environment's size per process: stack/heap alignment follows it, and a
    # fixed difference between the two sides (their paths differ in length) otherwise shows up
    # as a systematic few-% "regression" in an A/A comparison (Mytkowicz et al., ASPLOS 2009).
    env[harness.ENV_LANE] = lane
    if outcomes is not None:
        env[harness.ENV_OUTCOMES] = str(outcomes)
    if callgrind_out is not None:
        env[harness.ENV_CALLGRIND_OUT] = str(callgrind_out)
    if lane == "instructions":
        env.pop(ENV_PAD, None)
        size = _env_bytes(env) + len(ENV_PAD) + 2
        target = max(ENV_SIZE, -(-(size + 4096) // ENV_SIZE) * ENV_SIZE)
        env[ENV_PAD] = "x" * (target - size)
    else:
        env[ENV_PAD] = "x" * random.SystemRandom().randrange(0, 4096)
    return env


VALGRIND_ARGS = (
    "--tool=callgrind",
    "--instr-atstart=no",  # importing torch instrumented costs 65-80 s; ~15 s without
    "--collect-atstart=no",  # only the calls the harness switches collection on for
    "--error-limit=no",
    "-q",
)


def valgrind_command(out_file: Path) -> list[str]:
    """The argv prefix that runs a side's suite under callgrind."""
    exe = shutil.which("valgrind")
    if exe is None:
        raise BadInputError(
            "valgrind is not on PATH: the instruction lane needs it",
            hint="install it (apt-get install valgrind) or use --mode time",
        )
    return [exe, *VALGRIND_ARGS, f"--callgrind-out-file={out_file}"]


def detect_package(tree: Path, configured: str | None) -> str | None:
    """The package under test: ``package`` from the config, else the project name if it is a
    package folder in the tree (``name`` or ``src/name``)."""
    if configured:
        return configured
    py = tree / "pyproject.toml"
    if not py.is_file():
        return None
    from modelkit.config import tomllib

    try:
        name = tomllib.loads(py.read_text(encoding="utf-8")).get("project", {}).get("name")
    except Exception:
        return None
    if not name:
        return None
    mod = str(name).replace("-", "_").replace(".", "_")
    for base in (tree, tree / "src"):
        if (base / mod / "__init__.py").is_file() or (base / f"{mod}.py").is_file():
            return mod
    return None


def check_import(tree: Path, package: str, *, harness_dir: Path, label: str) -> str:
    """Import ``package`` in a fresh process from ``tree``; returns the file it came from."""
    code = (
        "import importlib, sys\n"
        f"m = importlib.import_module({package!r})\n"
        "print(getattr(m, '__file__', '') or '')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        env=side_env(tree, harness_dir, "cpu", None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise BadInputError(
            f"{label}: package '{package}' fails to import: {lines[-1] if lines else '?'}",
            hint="fix the import on that side (or pick another --compare ref)",
        )
    origin = Path(proc.stdout.strip()).resolve() if proc.stdout.strip() else None
    if origin is not None and tree.resolve() not in origin.parents:
        raise ModelkitError(
            f"{label}: '{package}' was imported from {origin}, not from {tree}",
            hint="something on sys.path shadows the tree (a .pth file?); uninstall it or "
            "set [tool.modelkit.benchmark] package",
        )
    return str(origin or "")


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


def _instruction_only(benchmarks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Of a process under callgrind keep only the instruction counts (its wall times, memory
    and the rest are meaningless there; the time lane's processes measure those)."""
    out = {}
    for nodeid, b in benchmarks.items():
        metrics = {k: m for k, m in b["metrics"].items() if m.get("kind") == "instructions"}
        out[nodeid] = {**b, "time": None, "gate_time": False, "raw": [], "metrics": metrics}
    return out


def run_suite(
    tree: Path,
    *,
    side: str,
    round: int,
    slot: int,
    head_root: Path,
    suite: Path,
    harness_dir: Path,
    device: str,
    markers: str | None,
    keyword: str | None,
    nodeids: list[str] | None,
    bench_min_rounds: int,
    bench_max_time: float,
    timeout: float,
    lane: str = "time",
) -> ProcessResult:
    """Run HEAD's suite (or the given node ids) in a fresh process against ``tree``; in the
    instruction lane that process runs under callgrind (:func:`valgrind_command`)."""
    work = Path(tempfile.mkdtemp(prefix="modelkit-bench-run-"))
    json_path, outcomes_path = work / "benchmark.json", work / "outcomes.json"
    targets = [str(head_root / n) for n in nodeids] if nodeids else [str(suite)]
    callgrind_out = work / "callgrind.out" if lane == "instructions" else None
    prefix = valgrind_command(callgrind_out) if callgrind_out else []
    cmd = [
        *prefix,
        sys.executable,
        "-m",
        "pytest",
        *targets,
        f"--rootdir={head_root}",
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:modelkit",
        "-p",
        HARNESS_MODULE,
        "--import-mode=importlib",
        "--continue-on-collection-errors",
        "-q",
        "--no-header",
        "-W",
        "ignore::DeprecationWarning",
        f"--benchmark-json={json_path}",
        "--benchmark-save-data",
        f"--benchmark-min-rounds={bench_min_rounds}",
        f"--benchmark-max-time={bench_max_time}",
        "--benchmark-sort=fullname",
        "--benchmark-columns=median",
    ]
    if markers and not nodeids:
        cmd += ["-m", markers]
    if keyword and not nodeids:
        cmd += ["-k", keyword]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=tree,
            env=side_env(
                tree, harness_dir, device, outcomes_path, lane=lane, callgrind_out=callgrind_out
            ),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(work, ignore_errors=True)
        raise ModelkitError(
            f"the suite ran longer than {timeout:.0f}s on the {side} side",
            hint="shrink the suite or raise --max-time",
        ) from None
    seconds = time.monotonic() - t0
    result = ProcessResult(side, round, slot, seconds, proc.returncode, lane=lane)
    try:
        if outcomes_path.is_file():
            o = json.loads(outcomes_path.read_text(encoding="utf-8"))
            result.outcomes, result.messages = o["outcomes"], o["messages"]
            result.collected = o["collected"]
        if json_path.is_file():
            result.doc = json.loads(json_path.read_text(encoding="utf-8"))
            result.benchmarks = summarise_doc(result.doc)
            if lane == "instructions":
                result.benchmarks = _instruction_only(result.benchmarks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if proc.returncode == 5:
        what = f" with -m {markers!r}" if markers else ""
        raise BadInputError(
            f"empty suite: no benchmarks collected in {suite}{what}",
            hint="add pytest-benchmark tests there (see docs/benchmark.md) or fix suite/markers",
        )
    if proc.returncode not in (0, 1) or (not result.outcomes and proc.returncode != 0):
        tail = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()]
        raise ModelkitError(
            f"pytest failed on the {side} side (exit {proc.returncode}): "
            f"{tail[-1] if tail else 'no output'}",
            hint="run the suite with pytest directly to see the whole error",
        )
    return result


# --------------------------------------------------------------------------- results files


def suite_digest(suite: Path, *, markers: str | None, keyword: str | None) -> str:
    """sha256 over the suite's files and selection (a cache key part)."""
    h = hashlib.sha256()
    files = [suite] if suite.is_file() else sorted(p for p in suite.rglob("*") if p.is_file())
    for p in files:
        if "__pycache__" in p.parts:
            continue
        h.update(str(p.relative_to(suite if suite.is_dir() else suite.parent)).encode())
        h.update(p.read_bytes())
    h.update(f"m={markers}|k={keyword}|h={harness.HARNESS_VERSION}".encode())
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


def cache_dir() -> Path:
    """Where results per (commit, suite, machine) are kept: $MODELKIT_CACHE/bench."""
    base = os.environ.get("MODELKIT_CACHE") or str(Path.home() / ".cache" / "modelkit")
    return Path(base) / "bench"


def cache_key(commit: str, suite_sha256: str, fingerprint: dict[str, Any], device: str) -> str:
    """The cache key of a clean commit's results."""
    raw = f"{commit}|{suite_sha256}|{fingerprint_digest(fingerprint)}|{device}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]
