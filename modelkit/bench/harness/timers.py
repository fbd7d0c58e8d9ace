"""Timers: pytest-benchmark's on CPU (a CUDA sync inside the timed call), CUDA events with an
L2 flush between repetitions on CUDA (as ``triton.testing.do_bench``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .recorder import Recorder


class Timers(Recorder):
    """Timing of one callable, per device."""

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
