"""modelkit's benchmark harness: a pytest plugin with fixtures for the metrics maintainers gate on.

Fixtures (for ordinary pytest-benchmark tests in ``benchmarks/``):

``bench``        a :class:`Bench` bound to pytest-benchmark's ``benchmark`` fixture and the device:
                 ``bench.train_throughput(step, samples_per_step=...)`` (samples/s),
                 ``bench.inference(model, x)`` (latency p50/p95 and samples/s),
                 ``bench.peak_memory(fn)`` (CUDA max allocated; the process's peak RSS on CPU),
                 ``bench.params(model)`` (parameter count),
                 ``bench.accuracy(train_eval, seeds=(0, 1, 2))`` (accuracy after a fixed budget),
                 ``bench.metric(name, value, unit=..., direction=...)`` (any metric: val loss,
                 tokens/s, ...),
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

This package is deliberately self-contained (stdlib + pytest, relative imports only; torch
imported lazily, modelkit never imported): ``modelkit benchmark --compare`` copies it once into a
temporary folder and loads that copy into both sides' processes, so the measuring code is
identical while each side imports the code under test from its own tree. One module per
concern: ``env`` (lanes, kinds, seeding), ``fingerprint``, ``callgrind``, ``recorder``
(``record``/``metric``/``instructions``), ``timers``, ``bench`` (the ``bench`` fixture's
object), ``outcomes`` (what every test did and recorded).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import pytest

from .bench import Bench
from .callgrind import Callgrind, callgrind
from .env import (
    DIRECTIONS,
    ENV_CALLGRIND_OUT,
    ENV_DEVICE,
    ENV_LANE,
    ENV_OUTCOMES,
    EXTRA_KEY,
    INSTRUCTION_LANE_ENV,
    JUDGED_KINDS,
    KINDS,
    LANES,
    lane,
    seed_everything,
)
from .fingerprint import FINGERPRINT_KEYS, Fingerprint, machine_fingerprint
from .outcomes import OUTCOMES
from .recorder import rate_name

HARNESS_VERSION = "3"

__all__ = [
    "DIRECTIONS", "ENV_CALLGRIND_OUT", "ENV_DEVICE", "ENV_LANE", "ENV_OUTCOMES", "EXTRA_KEY",
    "FINGERPRINT_KEYS", "HARNESS_VERSION", "INSTRUCTION_LANE_ENV", "JUDGED_KINDS", "KINDS", "LANES", "OUTCOMES", "Bench",
    "Callgrind", "Fingerprint", "bench", "bench_device", "callgrind", "lane", "machine_fingerprint", "rate_name",
    "seed_everything",
]  # fmt: skip


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
        import torch  # already imported by the suite: no import cost

        # one thread: no OpenMP spin-waiting, whose length depends on the scheduler
        torch.set_num_threads(1)


@pytest.fixture()
def bench(benchmark: Any, bench_device: str, request: pytest.FixtureRequest) -> Bench:
    """A :class:`Bench` for this test (wraps pytest-benchmark's ``benchmark``)."""
    return Bench(benchmark, bench_device, nodeid=request.node.nodeid, sink=OUTCOMES.metrics)


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
        "cpu": {"brand_raw": fp.cpu_model, "count": fp.cpu_count},
        "modelkit": fp.as_dict(),
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    """Remember what was collected (an empty suite is an error for the gate)."""
    OUTCOMES.collected = [i.nodeid for i in items]


def pytest_runtest_logreport(report: Any) -> None:
    """Remember each test's outcome."""
    OUTCOMES.add(report)


def pytest_collectreport(report: Any) -> None:
    """A file that fails to import is an error for every benchmark in it."""
    if report.failed:
        OUTCOMES.add_collect_error(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the outcomes file for the gate when ``$MODELKIT_BENCH_OUTCOMES`` names one."""
    OUTCOMES.write(exitstatus, HARNESS_VERSION)
