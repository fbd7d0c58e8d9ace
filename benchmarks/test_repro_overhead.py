"""Costs of provable reproducibility, measured side by side (run: make bench, or
``pytest benchmarks/test_repro_overhead.py --benchmark-only``).

* fingerprint-overhead: training throughput with per-step fingerprints every K steps vs none.
  Each round trains the same config with every K, interleaved so machine noise hits all
  alike; the training-loop time (run.json timings.train_s: forward/backward/step plus the
  fingerprints, no eval or checkpoints) is compared as a ratio of medians in extra_info.
* repro-cost: `modelkit repro CONFIG` (two fresh-process runs + comparison) against one
  `modelkit train -c CONFIG` of the same length, both as the user runs them (subprocesses).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a measurement, not part of the PR gate's suite

ROOT = Path(__file__).resolve().parents[1]
EVERY = (0, 1, 10, 25)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_fingerprint_overhead(benchmark, tmp_path: Path) -> None:
    """Median loop time per K, relative to K=0 (no fingerprints)."""
    from modelkit.config import TrainConfig
    from modelkit.training.loop import RunOptions, train

    cfg = TrainConfig(epochs=15, batch_size=64, device="cpu", deterministic=True, threads=1)
    times: dict[int, list[float]] = {k: [] for k in EVERY}
    counter = iter(range(10**6))

    def one_round() -> None:
        for k in EVERY:
            rec = train(
                cfg.replace(fingerprint_every=k),
                out=tmp_path / f"r{next(counter)}",
                options=RunOptions(),
            )
            times[k].append(rec["timings"]["train_s"])

    benchmark.group = "fingerprint-overhead"
    benchmark.pedantic(one_round, rounds=7, iterations=1, warmup_rounds=1)  # 345 steps each
    base = statistics.median(times[0])
    # the same figure from its parts, far less noisy: one fingerprint vs one training step
    import time

    import torch

    from modelkit.models.weights import load_model_from_dir
    from modelkit.runs.fingerprint import step_fingerprint

    model, _ = load_model_from_dir(tmp_path / "r0")
    loss = torch.tensor(0.5)
    per_call = []
    for _ in range(21):
        t0 = time.perf_counter()
        for _ in range(20):
            step_fingerprint(model, loss)
        per_call.append((time.perf_counter() - t0) / 20)
    fp_s = statistics.median(per_call)
    step_s = base / 345
    benchmark.extra_info["fingerprint_ms"] = round(fp_s * 1e3, 4)
    benchmark.extra_info["step_ms"] = round(step_s * 1e3, 4)
    for k in EVERY[1:]:
        benchmark.extra_info[f"every_{k}_predicted_pct"] = round(100 * fp_s / (k * step_s), 2)
    for k in EVERY:
        med = statistics.median(times[k])
        benchmark.extra_info[f"every_{k}_median_train_s"] = round(med, 4)
        benchmark.extra_info[f"every_{k}_overhead_pct"] = round(100 * (med / base - 1), 2)
    print("\nfingerprint overhead:", dict(benchmark.extra_info))


@pytest.mark.parametrize("verb", ["train", "repro"])
def test_repro_cost(benchmark, tmp_path: Path, verb: str) -> None:
    """One `modelkit train` vs one `modelkit repro` of the same config (wall time)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 4\nbatch_size = 64\ndevice = 'cpu'\ndeterministic = true\n")
    counter = iter(range(10**6))

    def run() -> None:
        args = (
            ["train", "-c", str(cfg), "-q", "--out", str(tmp_path / f"r{next(counter)}")]
            if verb == "train"
            else ["repro", str(cfg), "-q"]
        )
        proc = subprocess.run(
            [sys.executable, "-m", "modelkit", *args], env=_env(), capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr

    benchmark.group = "repro-cost"
    benchmark.pedantic(run, rounds=5, iterations=1)
