"""Peak memory per rank: `modelkit train --shard` (FSDP2) vs DDP, 2 gloo processes on CPU.

The same config trains a deep MLP (MnistMLP with DEPTH hidden layers of WIDTH, Adam) for a few
steps on digits, once replicated (DDP) and once sharded; each run records every rank's peak RSS
(``run.json["peak_memory_per_rank"]``). Reported side by side with the bytes of the parameters
(``P``) and the baseline of an idle worker (python + torch + gloo, measured by a 1-parameter run
of the same launch), as ratios over that baseline: DDP holds ~5 P (params, grads, 2 Adam
states, gradient buckets) per rank, FSDP2 ~4 P / N plus one layer gathered whole.

The second benchmark isolates rank 0's two whole-model moments of a sharded run in
fresh torchrun launches (benchmarks/fsdp_gather_worker.py): building the model (on the meta
device vs whole in host memory, then sharded) and writing the final weights (gathered one file
at a time vs the whole state at once), each as the peak RSS over the RSS just before it.

Run: PYTHONPATH=$PWD python -m pytest benchmarks/test_fsdp_memory.py --benchmark-only -s
(MODELKIT_BENCH_FSDP_WIDTH / _DEPTH set the model; default 2048 x 8: 31 M parameters, 124 MB;
MODELKIT_BENCH_GATHER_WIDTH / _DEPTH / _SHARD the second one's, default 2048 x 8, 40MB files.)
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


# ---- the final weights: gathered one file at a time vs the whole state on rank 0 ----------
GATHER_WIDTH = int(os.environ.get("MODELKIT_BENCH_GATHER_WIDTH", 2048))
GATHER_DEPTH = int(os.environ.get("MODELKIT_BENCH_GATHER_DEPTH", 8))
GATHER_SHARD = os.environ.get("MODELKIT_BENCH_GATHER_SHARD", "40MB")


def _gather_run(tmp: Path, build: str, gather: str) -> dict:
    """One torchrun launch of fsdp_gather_worker.py (a fresh pair of processes per variant)."""
    out = tmp / f"{build}-{gather}"
    out.mkdir()
    worker = Path(__file__).with_name("fsdp_gather_worker.py")
    args = [str(out), build, gather, str(GATHER_WIDTH), str(GATHER_DEPTH), GATHER_SHARD]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(worker)]
        + args,
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_final_gather_and_build_peak_rss_rank0(benchmark, tmp_path: Path) -> None:
    """Rank 0's peak RSS over its RSS just before, (a) while the final weights are gathered
    and written: file by file (``stream``) vs the whole state (``whole``, what --shard did
    before), next to the largest file and the parameters' bytes; (b) while the model is
    built and sharded: on the meta device vs whole in host memory (the same launches)."""
    results: dict[str, dict] = {}

    def run() -> None:
        results["new"] = _gather_run(tmp_path, "meta", "stream")
        results["old"] = _gather_run(tmp_path, "full", "whole")

    benchmark.pedantic(run, rounds=1, iterations=1)
    new, old = results["new"], results["old"]
    mib = 1 << 20
    gather_new = new["gather_peak_rss"] - new["rss_before_gather"]
    gather_old = old["gather_peak_rss"] - old["rss_before_gather"]
    build_new = new["build_peak_rss"] - new["rss_before_build"]
    build_old = old["build_peak_rss"] - old["rss_before_build"]
    info = {
        "model": f"MnistMLP {GATHER_DEPTH} x {GATHER_WIDTH}, max_shard_size {GATHER_SHARD}",
        "param_MiB": round(new["param_bytes"] / mib, 1),
        "largest_file_MiB": round(new["largest_file"] / mib, 1),
        "gather_peak_over_before_MiB": {
            "stream": round(gather_new / mib, 1),
            "whole": round(gather_old / mib, 1),
        },
        "gather_stream_over_largest_file": round(gather_new / new["largest_file"], 2),
        "gather_stream_over_whole": round(gather_new / gather_old, 3),
        "build_peak_over_before_MiB": {
            "meta": round(build_new / mib, 1),
            "full": round(build_old / mib, 1),
        },
        "build_meta_over_full": round(build_new / build_old, 3),
    }
    benchmark.extra_info.update(info)
    print(json.dumps(info, indent=2))
    assert new["largest_file"] == old["largest_file"] and new["total"] == old["total"]
    assert gather_new < gather_old  # the point of gathering file by file
