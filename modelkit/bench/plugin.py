"""modelkit's benchmark harness: a pytest plugin with fixtures for the metrics maintainers gate on.

Fixtures (for ordinary pytest-benchmark tests in ``benchmarks/``):

``bench``        a :class:`Bench` bound to pytest-benchmark's ``benchmark`` fixture and the device:
                 ``bench.train_throughput(step, samples_per_step=...)`` (samples/s),
                 ``bench.inference(model, x)`` (latency p50/p95 and samples/s),
                 ``bench.peak_memory(fn)`` (CUDA max allocated; the process's peak RSS on CPU),
                 ``bench.params(model)`` (parameter count),
                 ``bench.accuracy(train_eval, seeds=(0, 1, 2))`` (accuracy after a fixed budget),
                 all recorded in ``extra_info["modelkit"]`` of the pytest-benchmark JSON.
``bench_device`` the device string: ``--modelkit-device`` or ``$MODELKIT_BENCH_DEVICE`` (cpu).

Lanes (``$MODELKIT_BENCH_LANE``, set by the gate):

``time``          pytest-benchmark timings (CPU: wall clock; CUDA: CUDA events after a warm-up,
                  with a 256 MB L2 flush between repetitions, as ``triton.testing.do_bench``).
``instructions``  the process runs under ``valgrind --tool=callgrind --instr-atstart=no
                  --collect-atstart=no``; ``train_throughput``, ``inference`` and ``instructions``
                  switch instrumentation on only around the measured calls (callgrind client
                  requests issued from Python, see :class:`Callgrind`) and record the
                  instructions per call (``kind="instructions"``); accuracy and CPU memory are
                  left to the time lane's processes. Every test starts from the same seeds
                  (``random``, numpy, torch), so inputs and initial weights are identical.

This file is deliberately self-contained (stdlib + pytest; torch imported lazily, modelkit never
imported): ``modelkit benchmark --compare`` loads one copy of it into both sides' processes, so
the measuring code is identical while each side imports the code under test from its own tree.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

import pytest

HARNESS_VERSION = "2"
ENV_DEVICE = "MODELKIT_BENCH_DEVICE"
ENV_OUTCOMES = "MODELKIT_BENCH_OUTCOMES"
ENV_LANE = "MODELKIT_BENCH_LANE"
ENV_CALLGRIND_OUT = "MODELKIT_BENCH_CALLGRIND_OUT"  # the --callgrind-out-file the gate passed
EXTRA_KEY = "modelkit"
LANES = ("time", "instructions")
SEED = 0

# metric kinds understood by the gate (modelkit.bench.stats)
KINDS = ("timing", "rate", "exact", "memory", "accuracy", "instructions", "info")


# --------------------------------------------------------------------------- fingerprint


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


NVSMI_FIELDS = (
    "name",
    "driver_version",
    "clocks.sm",
    "clocks.mem",
    "clocks.max.sm",
    "clocks.max.mem",
    "clocks.applications.graphics",
    "persistence_mode",
)


def _nvidia_smi() -> dict[str, str | None]:
    """GPU model, driver and clocks (current, maximum, application) from ``nvidia-smi``."""
    empty: dict[str, str | None] = {"gpu": None, "driver": None, "gpu_clocks": None}
    exe = shutil.which("nvidia-smi")
    if not exe:
        return empty
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(NVSMI_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return empty
    first = [c.strip() for c in (out.splitlines() or [""])[0].split(",")]
    first += [""] * (len(NVSMI_FIELDS) - len(first))
    name, driver, sm, mem, max_sm, max_mem, app, persist = first[: len(NVSMI_FIELDS)]
    clocks = (
        f"sm {sm} MHz (max {max_sm}, application {app}), mem {mem} MHz (max {max_mem}), "
        f"persistence {persist}"
    )
    return {"gpu": name or None, "driver": driver or None, "gpu_clocks": clocks if sm else None}


def machine_fingerprint(device: str = "cpu") -> dict[str, Any]:
    """CPU model and cores, GPU model, driver and clocks, CUDA, torch, python, valgrind: what a
    measurement depends on."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": _dist_version("torch"),
        "device": device.split(":")[0],
        **_nvidia_smi(),
        "cuda": None,
        "valgrind": _valgrind_version(),
    }
    if device.startswith("cuda") or "torch" in sys.modules:
        import torch

        info["cuda"] = torch.version.cuda
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


FINGERPRINT_KEYS = ("cpu_model", "cpu_count", "gpu", "driver", "cuda", "torch", "python", "device")


def _valgrind_version() -> str | None:
    exe = shutil.which("valgrind")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# --------------------------------------------------------------------------- callgrind


class Callgrind:
    """Callgrind's client requests (``CALLGRIND_START_INSTRUMENTATION`` & co.) from Python.

    valgrind's client requests are C macros: a "special instruction preamble" (four ``rol``
    of ``rdi`` that add up to a no-op) then ``xchg rbx, rbx``, with ``rax`` pointing at the
    request's arguments and the answer in ``rdx``. Natively this is a no-op returning 0; under
    valgrind the JIT recognises it. ``torch._C._valgrind_toggle`` only toggles *collection*,
    which does not turn instrumentation on under ``--instr-atstart=no``, and
    ``callgrind_control -i on`` is asynchronous; so the harness writes those 13 instructions
    into an executable page and calls them through ctypes (x86-64 Linux only)."""

    _BASE = (ord("C") << 24) | (ord("T") << 16)  # VG_USERREQ_TOOL_BASE('C', 'T')
    DUMP_STATS = _BASE + 0
    ZERO_STATS = _BASE + 1
    TOGGLE_COLLECT = _BASE + 2
    DUMP_STATS_AT = _BASE + 3
    START_INSTRUMENTATION = _BASE + 4
    STOP_INSTRUMENTATION = _BASE + 5
    RUNNING_ON_VALGRIND = 0x1001
    CODE = bytes.fromhex(
        "4889f8"  # mov rax, rdi        (&args)
        "31d2"  # xor edx, edx          (default answer 0)
        "48c1c703" "48c1c70d" "48c1c73d" "48c1c733"  # rol rdi, 3 / 13 / 61 / 51
        "4887db"  # xchg rbx, rbx       (the request)
        "4889d0"  # mov rax, rdx        (return the answer)
        "c3"  # ret
    )  # fmt: skip

    def __init__(self) -> None:
        self._fn: Any = None
        self._page: Any = None
        self._dumps = 0
        if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
            return
        import ctypes
        import mmap

        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(self.CODE)
        self._page = page  # keep the mapping alive as long as the function
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        self._fn = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)(addr)

    def request(self, code: int, arg: int = 0) -> int:
        """Issue one client request; returns valgrind's answer (0 outside valgrind)."""
        if self._fn is None:
            return 0
        import ctypes

        args = (ctypes.c_ulong * 6)(code, arg, 0, 0, 0, 0)
        return int(self._fn(ctypes.addressof(args)))

    @property
    def running(self) -> bool:
        """True when this process runs under valgrind."""
        return self.request(self.RUNNING_ON_VALGRIND) > 0

    def count(self, fn: Callable[[], Any], *, repeats: int, out_file: str) -> list[int]:
        """Instructions of each of ``repeats`` calls of ``fn`` (instrumentation on around them,
        collection on only inside each call). Needs ``--collect-atstart=no``; the caller warms
        ``fn`` up first (uninstrumented: lazy initialisation is not what a call costs)."""
        import ctypes

        counts: list[int] = []
        self.request(self.START_INSTRUMENTATION)  # flushes the translations: slow, not counted
        try:
            for _ in range(repeats):
                self.request(self.ZERO_STATS)
                self.request(self.TOGGLE_COLLECT)  # on
                try:
                    fn()
                finally:
                    self.request(self.TOGGLE_COLLECT)  # off
                self._dumps += 1
                label = f"modelkit-{os.getpid()}-{self._dumps}"
                buf = ctypes.create_string_buffer(label.encode())
                self.request(self.DUMP_STATS_AT, ctypes.addressof(buf))
                counts.append(_read_dump(out_file, label))
        finally:
            self.request(self.STOP_INSTRUMENTATION)
        return counts


def _read_dump(out_file: str, label: str) -> int:
    """The total instruction count of the callgrind dump triggered by ``label``."""
    import glob

    for path in sorted(glob.glob(glob.escape(out_file) + ".*"), key=os.path.getmtime, reverse=True):
        total = None
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(1 << 16)
        if f"Client Request: {label}\n" not in head:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    total = int(line.split()[1])
                    break
        if total is not None:
            os.unlink(path)  # read once; keeps the folder small
            return total
    raise RuntimeError(f"callgrind dump {label!r} not found next to {out_file}")


_CALLGRIND: Callgrind | None = None


def callgrind() -> Callgrind:
    """The process's :class:`Callgrind` (built on first use)."""
    global _CALLGRIND
    if _CALLGRIND is None:
        _CALLGRIND = Callgrind()
    return _CALLGRIND


def lane() -> str:
    """The measuring lane of this process: ``time`` or ``instructions``."""
    value = os.environ.get(ENV_LANE) or "time"
    return value if value in LANES else "time"


def seed_everything(seed: int = SEED) -> None:
    """Seed ``random``, numpy and torch (those already imported) so every side and process
    builds identical inputs and initial weights."""
    import random

    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        torch.manual_seed(seed)


# --------------------------------------------------------------------------- the Bench helper


class Bench:
    """Measure and record the metrics of one benchmark test (see the module docstring)."""

    def __init__(self, benchmark: Any, device: str) -> None:
        self.benchmark = benchmark
        self.device = device

    @property
    def metrics(self) -> dict[str, Any]:
        """The metrics recorded so far (``extra_info["modelkit"]``)."""
        return self.benchmark.extra_info.setdefault(EXTRA_KEY, {})

    def sync(self) -> None:
        """Wait for queued CUDA work (no-op on CPU), so a timer measures finished work."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(torch.device(self.device))

    def record(
        self,
        name: str,
        value: float | Sequence[float],
        *,
        kind: str,
        unit: str = "",
        higher_is_better: bool = False,
        derived_from: str | None = None,
        **extra: Any,
    ) -> None:
        """Record one metric; ``kind`` tells the gate how to compare it (timing, exact, ...)."""
        if kind not in KINDS:
            raise ValueError(f"unknown metric kind {kind!r} (valid: {', '.join(KINDS)})")
        entry: dict[str, Any] = {"kind": kind, "unit": unit, "higher_is_better": higher_is_better}
        if isinstance(value, (list, tuple)):
            entry["values"] = [float(v) for v in value]
        else:
            entry["value"] = float(value)
        if derived_from:
            entry["derived_from"] = derived_from
        entry.update(extra)
        self.metrics[name] = entry

    @property
    def lane(self) -> str:
        """``time`` or ``instructions`` (a suite may pick a smaller batch for the latter)."""
        return lane()

    # ----------------------------------------------------------------- instruction lane

    def instructions(
        self,
        fn: Callable[[], Any],
        *,
        name: str = "instructions",
        repeats: int = 2,
        warmup: int = 3,
    ) -> int | None:
        """Count the instructions of one call of ``fn`` under callgrind (instruction lane only;
        returns None in the time lane). Records the median of ``repeats`` counted calls
        (``kind="instructions"``, gated with a relative threshold) and their spread."""
        if self.lane != "instructions":
            return None
        cg = callgrind()
        out_file = os.environ.get(ENV_CALLGRIND_OUT)
        if not cg.running or not out_file:
            pytest.fail(
                "the instruction lane needs the process to run under "
                "`valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no` "
                f"with ${ENV_CALLGRIND_OUT} naming its --callgrind-out-file",
                pytrace=False,
            )
        for _ in range(max(0, warmup)):
            fn()  # uninstrumented: cheap
        counts: list[int] = []

        def measure() -> None:
            counts.extend(cg.count(fn, repeats=max(1, repeats), out_file=str(out_file)))

        self.benchmark.pedantic(measure, rounds=1, iterations=1)
        self.benchmark.extra_info["modelkit_gate_time"] = False  # wall time under valgrind
        value = statistics.median(counts)
        spread = (max(counts) - min(counts)) / value if value else 0.0
        self.record(
            name, value, kind="instructions", unit="instr/call", counts=counts, spread=spread
        )
        return int(value)

    # ----------------------------------------------------------------- time lane

    def _timed(self, fn: Callable[[], Any], warmup: int) -> Any:
        """Warm up, then time ``fn``: pytest-benchmark with a CUDA sync inside the timer on CPU;
        CUDA events with an L2 flush between repetitions on CUDA (:meth:`_cuda_timed`)."""
        if self.device.startswith("cuda"):
            return self._cuda_timed(fn, warmup)
        result = None
        for _ in range(max(0, warmup)):
            result = fn()
        self.sync()

        def call() -> Any:
            out = fn()
            self.sync()
            return out

        out = self.benchmark(call)
        return out if out is not None else result

    def _cuda_timed(
        self, fn: Callable[[], Any], warmup: int, *, repetitions: int = 30, flush_mb: int = 256
    ) -> Any:
        """CUDA lane: ``warmup`` calls (at least 5), then ``repetitions`` calls each timed by a
        pair of CUDA events, with a ``flush_mb`` MB buffer written before each one so no
        repetition finds the previous one's data in L2 (as ``triton.testing.do_bench``).
        The samples (seconds) replace pytest-benchmark's host timer for the gate."""
        import torch

        dev = torch.device(self.device)
        cache = torch.empty(flush_mb * 2**20, dtype=torch.int8, device=dev)
        result = None
        for _ in range(max(5, warmup)):
            result = fn()
        torch.cuda.synchronize(dev)
        samples: list[float] = []

        def run_all() -> Any:
            out = None
            pairs = []
            for _ in range(repetitions):
                cache.zero_()  # flush L2
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn()
                end.record()
                pairs.append((start, end))
            torch.cuda.synchronize(dev)
            samples.extend(s.elapsed_time(e) / 1e3 for s, e in pairs)
            return out

        out = self.benchmark.pedantic(run_all, rounds=1, iterations=1)
        self._cuda_samples = sorted(samples)
        self.benchmark.extra_info["modelkit_cuda_event_s"] = self._cuda_samples
        return out if out is not None else result

    def _raw(self) -> list[float]:
        cuda = getattr(self, "_cuda_samples", None)
        if cuda:
            return list(cuda)
        stats = getattr(self.benchmark, "stats", None)
        inner = getattr(stats, "stats", None)
        return list(getattr(inner, "data", []) or [])

    def train_throughput(
        self, step: Callable[[], Any], *, samples_per_step: int, warmup: int = 3
    ) -> float | None:
        """Time one training step; records samples/s (higher is better). Returns samples/s.
        In the instruction lane: records the instructions per step instead (returns None)."""
        if self.lane == "instructions":
            self.instructions(step, warmup=warmup)
            return None
        self._timed(step, warmup)
        raw = self._raw()
        if not raw:
            return None
        sps = samples_per_step / min(raw)  # the gate's per-process statistic (see runner)
        self.record(
            "train_samples_per_s",
            sps,
            kind="rate",
            unit="samples/s",
            higher_is_better=True,
            derived_from="time",
        )
        return sps

    def inference(self, model: Any, x: Any, *, warmup: int = 3) -> Any:
        """Time ``model(x)`` under no_grad; records latency p50/p95 (ms) and samples/s.
        In the instruction lane: records the instructions per forward pass instead."""
        import torch

        model.eval()

        def forward() -> Any:
            with torch.no_grad():
                return model(x)

        if self.lane == "instructions":
            self.instructions(forward, warmup=warmup)
            return forward()
        out = self._timed(forward, warmup)
        raw = sorted(self._raw())
        if raw:
            p50 = statistics.median(raw)
            p95 = raw[min(len(raw) - 1, int(round(0.95 * (len(raw) - 1))))]
            # p50/p95 are reported; the gate judges the minimum (``time``, ``infer_samples_per_s``)
            self.record("latency_p50_ms", p50 * 1e3, kind="info", unit="ms")
            # tail latency from one process's samples is too noisy to gate on a shared runner
            self.record("latency_p95_ms", p95 * 1e3, kind="info", unit="ms")
            self.record(
                "infer_samples_per_s",
                len(x) / raw[0],  # the fastest round, as the gate's ``time``
                kind="rate",
                unit="samples/s",
                higher_is_better=True,
                derived_from="time",
            )
        return out

    def peak_memory(self, fn: Callable[[], Any]) -> int:
        """Run ``fn`` once; record CUDA max allocated (exact) or the process's peak RSS (CPU)."""
        if self.device.startswith("cuda"):
            import torch

            dev = torch.device(self.device)
            self.sync()
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
            fn()
            self.sync()
            peak = int(torch.cuda.max_memory_allocated(dev) - before)
            self.record("cuda_peak_bytes", peak, kind="exact", unit="bytes")
            return peak
        import resource

        fn()
        if self.lane == "instructions":
            return 0  # RSS under valgrind means nothing: the time lane's process records it
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux
        rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
        self.record("peak_rss_bytes", rss, kind="memory", unit="bytes")
        return rss

    def params(self, model: Any) -> int:
        """Record the parameter count (gated exactly)."""
        n = int(sum(p.numel() for p in model.parameters()))
        self.record("params", n, kind="exact", unit="")
        return n

    def accuracy(
        self, train_eval: Callable[[int], float], *, seeds: Iterable[int] = (0, 1, 2)
    ) -> list[float]:
        """Call ``train_eval(seed)`` (train a fixed budget, return held-out accuracy in [0, 1])
        once per seed; record the values (gated by non-inferiority, not timed)."""
        if self.lane == "instructions":
            pytest.skip("accuracy is measured by the time lane's process, not under valgrind")
        seeds = list(seeds)
        values: list[float] = []

        def run_all() -> None:
            values.clear()
            values.extend(float(train_eval(s)) for s in seeds)

        self.benchmark.pedantic(run_all, rounds=1, iterations=1)
        self.benchmark.extra_info["modelkit_gate_time"] = False  # one round: not a timing sample
        self.record("accuracy", values, kind="accuracy", unit="fraction", seeds=seeds)
        return values


# --------------------------------------------------------------------------- pytest hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--modelkit-device``: the device the suite runs on (default ``$MODELKIT_BENCH_DEVICE``)."""
    group = parser.getgroup("modelkit", "modelkit benchmark harness")
    group.addoption(
        "--modelkit-device",
        default=None,
        help="device for modelkit benchmark fixtures: cpu | cuda | cuda:N (default cpu)",
    )


def _device(config: pytest.Config) -> str:
    try:
        opt = config.getoption("--modelkit-device")
    except ValueError:  # plugin registered after option parsing (from a conftest)
        opt = None
    return opt or os.environ.get(ENV_DEVICE) or "cpu"


@pytest.fixture(scope="session")
def bench_device(request: pytest.FixtureRequest) -> str:
    """The device the suite runs on (fails clearly when CUDA is asked for but absent)."""
    device = _device(request.config)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError(f"device {device!r} asked for, but no CUDA device is available")
    return device


@pytest.fixture(autouse=True)
def _modelkit_seed() -> None:
    """Every test starts from the same seeds (identical inputs and weights on both sides)."""
    seed_everything()
    if lane() == "instructions" and "torch" in sys.modules:
        # one thread: no OpenMP spin-waiting, whose length depends on the scheduler
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture()
def bench(benchmark: Any, bench_device: str) -> Bench:
    """A :class:`Bench` for this test (wraps pytest-benchmark's ``benchmark``)."""
    return Bench(benchmark, bench_device)


def pytest_benchmark_generate_machine_info(config: pytest.Config) -> dict[str, Any]:
    """Fast machine info (no py-cpuinfo subprocess) with modelkit's fingerprint inside."""
    fp = machine_fingerprint(_device(config))
    return {
        "node": platform.node(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(),
        "python_build": list(platform.python_build()),
        "release": platform.release(),
        "system": platform.system(),
        "cpu": {"brand_raw": fp["cpu_model"], "count": fp["cpu_count"]},
        "modelkit": fp,
    }


class _Outcomes:
    """Per-test outcome (passed/failed/skipped) with a one-line reason, written at the end."""

    def __init__(self) -> None:
        self.collected: list[str] = []
        self.outcomes: dict[str, str] = {}
        self.messages: dict[str, str] = {}
        self.started = time.time()

    def add(self, report: Any) -> None:
        nodeid = report.nodeid
        if report.failed:
            self.outcomes[nodeid] = "failed" if report.when == "call" else "error"
            text = str(getattr(report, "longreprtext", "") or report.longrepr or "")
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            err = [ln for ln in lines if ln.startswith("E ")]
            self.messages[nodeid] = (err[-1][2:].strip() if err else (lines[-1] if lines else ""))[
                :300
            ]
        elif report.skipped and nodeid not in self.outcomes:
            self.outcomes[nodeid] = "skipped"
            # pytest's skip longrepr is (file, line, "Skipped: reason")
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            self.messages[nodeid] = str(reason).removeprefix("Skipped: ")[:300]
        elif report.when == "call" and report.passed:
            self.outcomes.setdefault(nodeid, "passed")


_OUTCOMES = _Outcomes()


def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    """Remember what was collected (an empty suite is an error for the gate)."""
    _OUTCOMES.collected = [i.nodeid for i in items]


def pytest_runtest_logreport(report: Any) -> None:
    """Remember each test's outcome."""
    _OUTCOMES.add(report)


def pytest_collectreport(report: Any) -> None:
    """A file that fails to import is an error for every benchmark in it."""
    if report.failed:
        _OUTCOMES.outcomes[report.nodeid] = "error"
        text = str(getattr(report, "longreprtext", "") or report.longrepr or "")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        err = [ln for ln in lines if ln.startswith("E ")]
        _OUTCOMES.messages[report.nodeid] = (
            err[-1][2:].strip() if err else (lines[-1] if lines else "")
        )[:300]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the outcomes file for the gate when ``$MODELKIT_BENCH_OUTCOMES`` names one."""
    path = os.environ.get(ENV_OUTCOMES)
    if not path:
        return
    doc = {
        "harness": HARNESS_VERSION,
        "exitstatus": int(exitstatus),
        "collected": _OUTCOMES.collected,
        "outcomes": _OUTCOMES.outcomes,
        "messages": _OUTCOMES.messages,
        "seconds": round(time.time() - _OUTCOMES.started, 3),
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
