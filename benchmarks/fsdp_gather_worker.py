"""torchrun worker of benchmarks/test_fsdp_memory.py: rank 0's peak RSS while a sharded model
is built, and while its final weights are gathered and written.

Usage: torchrun --nproc-per-node 2 fsdp_gather_worker.py OUT BUILD GATHER WIDTH DEPTH SHARD
  BUILD: meta (meta device, each rank initialises only its shards) | full (the whole model
         built in host memory, then sharded: what --shard did before)
  GATHER: stream (one file's tensors at a time) | whole (torch's get_model_state_dict with
          full_state_dict + cpu_offload, then save_model_weights: what --shard did before)
Writes OUT/result.json on rank 0. The peak is the kernel's high-water mark (VmHWM), reset
(/proc/self/clear_refs) just before the phase it measures, after a warm-up build of a tiny
model (imports, device mesh, FSDP2's first use are not counted).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from modelkit.models.mlp import MnistMLP
from modelkit.training import distributed as D
from modelkit.training import meta_init, sharding
from modelkit.weights import plan_weights, save_model_weights, save_streamed_weights


def status(key: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> int:
    """Reset the high-water mark to the current RSS; returns that RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return status("VmRSS")


def build(kind: str, width: int, depth: int, world: D.World) -> torch.nn.Module:
    torch.manual_seed(0)
    factory = lambda: MnistMLP(hidden_sizes=[width] * depth)  # noqa: E731
    if kind == "full":
        model = factory()
        sharding.shard_model(model, world, torch.device("cpu"))
        return model
    model, plan, why = meta_init.meta_build(factory)
    assert plan is not None, why
    sharding.shard_model(model, world, torch.device("cpu"))
    meta_init.materialize(model, plan, world, torch.device("cpu"))
    return model


def gather(kind: str, model: torch.nn.Module, world: D.World, out: Path, size: str) -> dict:
    folder = out / "weights"
    if kind == "whole":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=opts)
        saved = save_model_weights(state, folder, max_shard_size=size) if world.main else None
        del state
    elif world.main:
        source = sharding.GatheredWeights(model, world)
        saved = save_streamed_weights(plan_weights(source.specs(), size), source.fetch, folder)
        D.agree(world, None)
    else:
        sharding.drain_weights(model, world, size)
        saved = None
    return {} if saved is None else {"largest_file": saved.largest_file, "total": saved.total_size}


def main() -> None:
    out, build_kind, gather_kind = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    width, depth, size = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    world = D.join("cpu")
    build(build_kind, 8, 1, world)  # warm-up: imports, the device mesh, FSDP2's first use
    base = reset_peak()
    model = build(build_kind, width, depth, world)
    build_peak = status("VmHWM")
    D.agree(world, None)
    before = reset_peak()
    files = gather(gather_kind, model, world, out, size)
    gather_peak = status("VmHWM")
    if world.main:
        result = {
            "rss_before_build": base,
            "build_peak_rss": build_peak,
            "rss_before_gather": before,
            "gather_peak_rss": gather_peak,
            "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            **files,
        }
        (out / "result.json").write_text(json.dumps(result))
    D.leave(world)
    D.exit_process(0)  # no interpreter finalisation under gloo (see exit_process)


if __name__ == "__main__":
    main()
