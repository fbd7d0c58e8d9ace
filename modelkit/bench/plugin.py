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

HARNESS_VERSION = "1"
ENV_DEVICE = "MODELKIT_BENCH_DEVICE"
ENV_OUTCOMES = "MODELKIT_BENCH_OUTCOMES"
EXTRA_KEY = "modelkit"

# metric kinds understood by the gate (modelkit.bench.stats)
KINDS = ("timing", "rate", "exact", "memory", "accuracy", "info")


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


def _nvidia_smi() -> dict[str, str | None]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"gpu": None, "driver": None}
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"gpu": None, "driver": None}
    first = (out.splitlines() or [""])[0]
    name, _, driver = first.partition(",")
    return {"gpu": name.strip() or None, "driver": driver.strip() or None}


def machine_fingerprint(device: str = "cpu") -> dict[str, Any]:
    """CPU model and cores, GPU model, driver, CUDA, torch, python: what a timing depends on."""
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
    }
    if device.startswith("cuda") or "torch" in sys.modules:
        import torch

        info["cuda"] = torch.version.cuda
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


FINGERPRINT_KEYS = ("cpu_model", "cpu_count", "gpu", "driver", "cuda", "torch", "python", "device")


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

    def _timed(self, fn: Callable[[], Any], warmup: int) -> Any:
        """Warm up, then run ``fn`` under pytest-benchmark with a CUDA sync inside the timer."""
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

    def _raw(self) -> list[float]:
        stats = getattr(self.benchmark, "stats", None)
        inner = getattr(stats, "stats", None)
        return list(getattr(inner, "data", []) or [])

    def train_throughput(
        self, step: Callable[[], Any], *, samples_per_step: int, warmup: int = 3
    ) -> float | None:
        """Time one training step; records samples/s (higher is better). Returns samples/s."""
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
        """Time ``model(x)`` under no_grad; records latency p50/p95 (ms) and samples/s."""
        import torch

        model.eval()

        def forward() -> Any:
            with torch.no_grad():
                return model(x)

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
