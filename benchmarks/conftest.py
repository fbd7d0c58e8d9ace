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


def probe_gflops(*, n: int = 1024, repeats: int = 15) -> float:
    """GFLOP/s of an ``n x n`` fp32 matmul, the median of ``repeats`` timings, taken now.

    The loop benchmarks call it right before and after each measured round and divide by the
    mean of the two: on a shared machine the matmul rate drifts by 10-30% within a minute, so
    one probe at the start of the file is not the machine the loop later ran on."""
    import statistics
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


@pytest.fixture
def matmul_probe() -> Callable[..., float]:
    """``probe(benchmark, group=...)``: time a 1024x1024 fp32 matmul as a benchmark of its own
    (the table's row); returns its GFLOP/s. The loop benchmarks divide each round by
    :func:`probe_gflops` taken around that round instead."""
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


@pytest.fixture
def probe_now() -> Callable[..., float]:
    """:func:`probe_gflops`, for benchmarks that interleave the probe with their rounds."""
    return probe_gflops


@pytest.fixture
def eager_mlp_loop() -> Callable[..., float]:
    """``loop(config, x, y, epochs=1)``: the samples/s of the plainest PyTorch loop that trains
    the MNIST MLP with ``config``'s batch size, optimizer and loss (built by modelkit's own
    ``build_optimizer``/``build_loss`` from the config's recipe tables): tensors in memory,
    ``index_select`` batches of a fresh permutation, no run directory, fingerprints, logging or
    checkpoints. Measured beside modelkit's loop, it separates modelkit's own overhead from
    PyTorch's."""
    import time

    import torch

    from modelkit.config import recipe
    from modelkit.models.mlp import MnistMLP
    from modelkit.training.losses import build_loss
    from modelkit.training.optim import build_optimizer

    def loop(config, x, y, *, epochs: int = 1) -> float:
        x, batch_size = x.flatten(1).contiguous(), config.batch_size
        model = MnistMLP()
        optimizer = build_optimizer(recipe(config)["optimizer"], model.parameters())
        criterion = build_loss(config.loss)
        n, elapsed = len(x), 0.0
        for _ in range(epochs):
            perm = torch.randperm(n)
            start = time.perf_counter()
            for b in range(0, n, batch_size):
                idx = perm[b : b + batch_size]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                optimizer.zero_grad(set_to_none=True)
                criterion(model(xb), yb).backward()
                optimizer.step()
            elapsed += time.perf_counter() - start
        return epochs * n / elapsed

    return loop
