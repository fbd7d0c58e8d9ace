"""Run the suite in a fresh process against one tree, and read what it measured.

Each run is ``python -m pytest <HEAD's suite>`` with ``PYTHONPATH=<tree>[/src]:<harness>`` and
the working directory at that tree, so the code under test is imported from that tree, never
from whatever is installed; the suite files always come from HEAD's tree; the harness (the
fixtures of :mod:`modelkit.bench.plugin`) is one copy shared by both sides.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from modelkit.bench import harness
from modelkit.bench.results import (
    BenchmarkDoc,
    OutcomesFile,
    ProcessResult,
    add_recorded_only,
    instruction_only,
    merge_processes,
    read_json,
    read_record,
    summarise_doc,
)
from modelkit.errors import BadInputError, ModelkitError

HARNESS_MODULE = "_modelkit_bench_plugin"
MIN_PER_GROUP = 3  # benchmarks per callgrind process before a side is split over the cores


def make_harness_dir() -> Path:
    """A temp folder holding one importable copy of the harness package."""
    d = Path(tempfile.mkdtemp(prefix="modelkit-bench-harness-"))
    shutil.copytree(
        Path(harness.__file__).parent,
        d / HARNESS_MODULE,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
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
    isa: str = "native",
) -> dict[str, str]:
    """The environment of a side's process: its own tree first on the path, nothing inherited.

    Time lane: the environment's size is random per process (layout becomes noise, not bias).
    Instruction lane: padded to the same total size on both sides, so the two trees' path
    lengths cannot shift the stack and change a count (measured: 3 KB more environment moved
    an MLP step's count by 0.01%); MKL's and oneDNN's ISA follows ``isa`` alone (``"sse4"``:
    capped, :data:`~modelkit.bench.harness.INSTRUCTION_LANE_ENV`; ``"native"``: the caller's
    caps removed)."""
    # the caller's pytest settings stay out: PYTEST_XDIST_WORKER (the gate run from a
    # pytest-xdist worker) makes pytest-benchmark disable itself, so nothing would be timed
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("PYTEST_")}  # fmt: skip
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
        # the kernels MKL/oneDNN pick follow the config alone, never the caller's shell
        for k, v in harness.INSTRUCTION_LANE_ENV.items():
            if isa == "sse4":  # without their AVX2 kernels (100-400x slower under valgrind)
                env[k] = v
            else:
                env.pop(k, None)
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


@dataclass(frozen=True)
class ProjectTable:
    """pyproject.toml's ``[project]`` (its name: the package under test by default)."""

    name: str | None = None


@dataclass(frozen=True)
class PyProject:
    """pyproject.toml, for its ``[project]`` table."""

    project: ProjectTable | None = None


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
        project = read_record(
            PyProject, tomllib.loads(py.read_text(encoding="utf-8")), source=str(py)
        )
    except Exception:
        return None
    name = project.project.name if project.project else None
    if not name:
        return None
    mod = name.replace("-", "_").replace(".", "_")
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


@dataclass(frozen=True)
class SuiteRun:
    """How a side's processes run HEAD's suite (everything but the tree and the round)."""

    head_root: Path
    suite: Path
    harness_dir: Path
    device: str
    markers: str | None
    keyword: str | None
    bench_min_rounds: int
    bench_max_time: float
    timeout: float
    instruction_isa: str

    def command(
        self, nodeids: list[str] | None, json_path: Path, callgrind_out: Path | None
    ) -> list[str]:
        """The argv of one process (under callgrind when ``callgrind_out`` is given)."""
        prefix = valgrind_command(callgrind_out) if callgrind_out else []
        targets = [str(self.head_root / n) for n in nodeids] if nodeids else [str(self.suite)]
        cmd = [
            *prefix, sys.executable, "-m", "pytest", *targets, f"--rootdir={self.head_root}",
            "-o", "addopts=", "-p", "no:cacheprovider", "-p", "no:modelkit",
            "-p", HARNESS_MODULE, "--import-mode=importlib", "--continue-on-collection-errors",
            "-q", "--no-header", "-W", "ignore::DeprecationWarning",
            f"--benchmark-json={json_path}", "--benchmark-save-data",
            f"--benchmark-min-rounds={self.bench_min_rounds}",
            f"--benchmark-max-time={self.bench_max_time}",
            "--benchmark-sort=fullname", "--benchmark-columns=median",
        ]  # fmt: skip
        if callgrind_out:
            # ~50x slower under valgrind (more on a loaded runner): a per-test timeout from the
            # suite's pytest settings would fail a benchmark that is only slow; the gate's own
            # per-process timeout still stops a hang
            cmd += ["-p", "no:timeout"]
        if self.markers:
            cmd += ["-m", self.markers]
        if self.keyword and not nodeids:
            cmd += ["-k", self.keyword]
        return cmd


def collect(how: SuiteRun, tree: Path) -> list[str]:
    """The node ids HEAD's suite selects (a native ``pytest --collect-only``, a few seconds)."""
    cmd = [c for c in how.command(None, Path(os.devnull), None) if not c.startswith("--bench")]
    env = side_env(tree, how.harness_dir, how.device, None)
    proc = subprocess.run(
        [*cmd, "--collect-only"], cwd=tree, env=env, capture_output=True, text=True,
        timeout=how.timeout,
    )  # fmt: skip
    return [ln.strip() for ln in proc.stdout.splitlines() if "::" in ln and " " not in ln.strip()]


def run_suite(
    tree: Path,
    how: SuiteRun,
    *,
    side: str,
    round: int,
    slot: int,
    nodeids: list[str] | None = None,
    lane: str = "time",
    allow_empty: bool = False,
) -> ProcessResult:
    """Run HEAD's suite (or the given node ids) in a fresh process against ``tree``; in the
    instruction lane that process runs under callgrind (:func:`valgrind_command`)."""
    work = Path(tempfile.mkdtemp(prefix="modelkit-bench-run-"))
    json_path, outcomes_path = work / "benchmark.json", work / "outcomes.json"
    callgrind_out = work / "callgrind.out" if lane == "instructions" else None
    env = side_env(
        tree,
        how.harness_dir,
        how.device,
        outcomes_path,
        lane=lane,
        callgrind_out=callgrind_out,
        isa=how.instruction_isa,
    )
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            how.command(nodeids, json_path, callgrind_out),
            cwd=tree, env=env, capture_output=True, text=True, timeout=how.timeout,
        )  # fmt: skip
        result = ProcessResult(side, round, slot, time.monotonic() - t0, proc.returncode, lane=lane)
        _read_process(result, json_path, outcomes_path)
    except subprocess.TimeoutExpired:
        raise ModelkitError(
            f"the suite ran longer than {how.timeout:.0f}s on the {side} side",
            hint="shrink the suite or raise --max-time",
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not (allow_empty and proc.returncode == 5):
        _check_exit(proc, result, how, side)
    return result


def _read_process(result: ProcessResult, json_path: Path, outcomes_path: Path) -> None:
    outcomes = read_json(OutcomesFile, outcomes_path) if outcomes_path.is_file() else None
    if outcomes is not None:
        result.outcomes, result.messages = outcomes.outcomes, outcomes.messages
        result.collected = outcomes.collected
    if json_path.is_file():
        result.doc = read_json(BenchmarkDoc, json_path)
        result.benchmarks = summarise_doc(result.doc)
    recorded = outcomes.metrics if outcomes is not None else {}
    result.benchmarks = add_recorded_only(result.benchmarks, recorded)
    if result.lane == "instructions":
        result.benchmarks = instruction_only(result.benchmarks)


def _check_exit(
    proc: subprocess.CompletedProcess[str], result: ProcessResult, how: SuiteRun, side: str
) -> None:
    if proc.returncode == 5:
        what = f" with -m {how.markers!r}" if how.markers else ""
        raise BadInputError(
            f"empty suite: no benchmarks collected in {how.suite}{what}",
            hint="add pytest-benchmark tests there (see docs/benchmark.md) or fix suite/markers",
        )
    if proc.returncode not in (0, 1) or (not result.outcomes and proc.returncode != 0):
        tail = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()]
        raise ModelkitError(
            f"pytest failed on the {side} side (exit {proc.returncode}): "
            f"{tail[-1] if tail else 'no output'}",
            hint="run the suite with pytest directly to see the whole error",
        )


def run_instruction_sides(
    jobs: list[tuple[Path, str]], how: SuiteRun, *, workers: int
) -> dict[str, ProcessResult]:
    """The instruction lane's callgrind processes for every (tree, side) job, ``workers`` at a
    time; each side's benchmarks are split into ``workers // sides`` groups (one process each)
    so a lone side (its REF came from the cache) still uses every core. A count does not depend
    on the load (measured: A/A identical), so processes can run side by side."""
    groups_per_side = max(1, workers // max(1, len(jobs)))
    groups: list[list[str] | None] = [None]
    if groups_per_side > 1:
        nodeids = collect(how, how.head_root)
        by_file: dict[str, list[str]] = {}
        for n in nodeids:
            by_file.setdefault(n.split("::")[0], []).append(n)
        ordered = [n for f in sorted(by_file) for n in by_file[f]]
        split = [ordered[i::groups_per_side] for i in range(groups_per_side)]
        # each group pays one interpreter start and imports under valgrind: worth it only when
        # there are a few benchmarks per group
        if len(ordered) >= MIN_PER_GROUP * groups_per_side:
            groups = [g for g in split if g] or [None]
    tasks = [(tree, side, g) for tree, side in jobs for g in groups]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(tasks)))) as pool:
        futures = [
            (side, pool.submit(run_suite, tree, how, side=side, round=0, slot=0, nodeids=g,
                               lane="instructions", allow_empty=len(groups) > 1))
            for tree, side, g in tasks
        ]  # fmt: skip
        parts: dict[str, list[ProcessResult]] = {}
        for side, fut in futures:
            parts.setdefault(side, []).append(fut.result())
    return {side: merge_processes(ps) for side, ps in parts.items()}
