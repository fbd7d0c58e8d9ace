"""Peak memory per rank: `modelkit train --shard` (FSDP2) vs DDP, 2 gloo processes on CPU.

The same config trains a deep MLP (MnistMLP with DEPTH hidden layers of WIDTH, Adam) for a few
steps on digits, once replicated (DDP) and once sharded; each run records every rank's peak RSS
(``run.json["peak_memory_per_rank"]``). Reported side by side with the bytes of the parameters
(``P``) and the baseline of an idle worker (python + torch + gloo, measured by a 1-parameter run
of the same launch), as ratios over that baseline: DDP holds ~5 P (params, grads, 2 Adam
states, gradient buckets) per rank, FSDP2 ~4 P / N plus one layer gathered whole.

Run: PYTHONPATH=$PWD python -m pytest benchmarks/test_fsdp_memory.py --benchmark-only -s
(MODELKIT_BENCH_FSDP_WIDTH / _DEPTH set the model; default 2048 x 8: 31 M parameters, 124 MB.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,  # minutes on a shared 2-core box: run by hand
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores"),
]

WIDTH = int(os.environ.get("MODELKIT_BENCH_FSDP_WIDTH", 2048))
DEPTH = int(os.environ.get("MODELKIT_BENCH_FSDP_DEPTH", 8))


def _train(tmp: Path, name: str, hidden: list[int], *shard: str) -> dict:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(
        'model = "mnist-mlp"\ndata = "digits"\ndevice = "cpu"\nepochs = 1\nmax_steps = 3\n'
        'batch_size = 128\noptimizer = "adam"\nfingerprint_every = 0\n'
        f"model_kwargs = {{ hidden_sizes = {hidden} }}\n"
    )
    args = ["train", "-c", str(cfg), "--nproc-per-node", "2", "--out", str(tmp / name), "-q"]
    p = subprocess.run(
        [sys.executable, "-m", "modelkit", *args, *shard],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp,
    )
    assert p.returncode == 0, p.stderr
    return json.loads((tmp / name / "run.json").read_text())


def _peak(record: dict) -> int:
    return max(r["peak_rss_bytes"] for r in record["peak_memory_per_rank"])


def test_fsdp_peak_memory_per_rank_vs_ddp(benchmark, tmp_path: Path) -> None:
    hidden = [WIDTH] * DEPTH
    results: dict[str, dict] = {}

    def run() -> None:
        results["baseline"] = _train(tmp_path, "baseline", [1])
        results["ddp"] = _train(tmp_path, "ddp", hidden)
        results["fsdp"] = _train(tmp_path, "fsdp", hidden, "--shard")

    benchmark.pedantic(run, rounds=1, iterations=1)
    params = results["fsdp"]["num_parameters"] * 4  # float32 bytes
    base = _peak(results["baseline"])
    ddp, fsdp = _peak(results["ddp"]) - base, _peak(results["fsdp"]) - base
    info = {
        "param_bytes": params,
        "baseline_peak_rss": base,
        "ddp_peak_rss_per_rank": [
            r["peak_rss_bytes"] for r in results["ddp"]["peak_memory_per_rank"]
        ],
        "fsdp_peak_rss_per_rank": [
            r["peak_rss_bytes"] for r in results["fsdp"]["peak_memory_per_rank"]
        ],
        "ddp_over_baseline_in_P": round(ddp / params, 2),
        "fsdp_over_baseline_in_P": round(fsdp / params, 2),
        "fsdp_over_ddp": round(fsdp / ddp, 3),
    }
    benchmark.extra_info.update(info)
    print(json.dumps(info, indent=2))
    assert results["fsdp"]["weights_sha256"] and results["fsdp"]["sharding"]["units"] == DEPTH + 2
    assert fsdp < ddp  # the point of sharding
