"""The benchmark suite's shared setup: modelkit's harness fixtures (``bench``, ``bench_device``).

``pip install modelkit`` registers them through the ``pytest11`` entry point; this makes a plain
``pytest benchmarks/`` work from a source checkout too. Under ``modelkit benchmark`` the gate
loads its own copy of the harness into both sides' processes, and this hook leaves it alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

SHARED = Path(
    os.environ.get("MODELKIT_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def pytest_configure(config: pytest.Config) -> None:
    pm = config.pluginmanager
    if not (pm.has_plugin("modelkit") or pm.has_plugin("_modelkit_bench_plugin")):
        from modelkit.bench import plugin

        pm.register(plugin, "modelkit")


@pytest.fixture(scope="module")
def mnist_spec() -> str:
    """The real MNIST split in ../shared/data (skipped with the reason when it is absent)."""
    path = SHARED / "mnist"
    if not (path / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {path} (set MODELKIT_SHARED_DATA)")
    return f"mnist:{path}"


@pytest.fixture
def matmul_probe() -> Callable[..., float]:
    """``probe(benchmark, group=...)``: time a 1024x1024 fp32 matmul; returns its GFLOP/s,
    the machine's practical roofline that the loop benchmarks divide by."""
    import torch

    def probe(benchmark, *, group: str) -> float:
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        benchmark.group = group
        benchmark.pedantic(lambda: a @ b, rounds=30, iterations=1, warmup_rounds=2)
        return 2 * n**3 / benchmark.stats.stats.median / 1e9

    return probe
