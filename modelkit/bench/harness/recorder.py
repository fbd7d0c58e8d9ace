"""Recording metrics, and counting instructions in the instruction lane."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from .callgrind import callgrind
from .env import DIRECTIONS, ENV_CALLGRIND_OUT, EXTRA_KEY, KINDS, lane


def rate_name(prefix: str, unit: str) -> str:
    """``train`` + ``tokens/s`` -> ``train_tokens_per_s``."""
    slug = unit.strip().replace("/", "_per_").replace(" ", "_") or "per_s"
    return f"{prefix}_{slug}"


class Recorder:
    """Metric storage of one benchmark test: ``extra_info["modelkit"]`` of pytest-benchmark's
    JSON, and the harness's own outcomes file (which keeps tests that never timed anything).
    An entry's keys are the fields of ``modelkit.bench.results.MetricRecord``, the type the
    gate reads it back as (this package imports nothing of modelkit's, so it writes the JSON)."""

    def __init__(
        self,
        benchmark: Any,
        device: str,
        *,
        nodeid: str | None = None,
        sink: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.benchmark = benchmark
        self.device = device
        self.nodeid = nodeid
        self._sink = sink

    @property
    def metrics(self) -> dict[str, Any]:
        """The metrics recorded so far (``extra_info["modelkit"]``)."""
        return self.benchmark.extra_info.setdefault(EXTRA_KEY, {})

    @property
    def lane(self) -> str:
        """``time`` or ``instructions`` (a suite may pick a smaller batch for the latter)."""
        return lane()

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
        higher_is_better: bool | None = None,
        derived_from: str | None = None,
        **extra: Any,
    ) -> None:
        """Record one metric; ``kind`` tells the gate how to compare it (timing, exact, ...).
        ``higher_is_better`` left out means the kind's default (accuracy and quality: higher;
        everything else: lower)."""
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
        if self._sink is not None and self.nodeid:
            self._sink.setdefault(self.nodeid, {})[name] = entry

    def metric(
        self,
        name: str,
        value: float | Sequence[float],
        *,
        unit: str = "",
        direction: str,
        kind: str = "quality",
        margin: float | None = None,
    ) -> None:
        """Record any metric with its unit and direction (``"higher"`` or ``"lower"`` is
        better). ``kind="quality"`` (val loss, perplexity, accuracy in any range) is judged by
        non-inferiority, with ``margin`` in the metric's unit (default: the config's relative
        ``quality_margin``); ``kind="rate"`` (tokens/s) by the timing statistics; ``"exact"``,
        ``"memory"`` and ``"info"`` as their names say. A sequence is one value per seed."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
        if kind not in ("quality", "rate", "exact", "memory", "info"):
            raise ValueError(
                f"bench.metric kind must be quality, rate, exact, memory or info, got {kind!r}"
            )
        extra = {} if margin is None else {"margin": float(margin)}
        self.record(name, value, kind=kind, unit=unit, higher_is_better=direction == "higher",
                    **extra)  # fmt: skip

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
            fn()  # uninstrumented, not counted (under valgrind about as slow as a counted call)
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
