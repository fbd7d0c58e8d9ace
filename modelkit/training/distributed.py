"""Multi-process / multi-node training through PyTorch's own elastic launcher (torchrun).

``modelkit train --nproc-per-node N`` re-executes itself as
``python -m torch.distributed.run ... -m modelkit train <same args>``; each worker sees the
torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and trains with
DistributedDataParallel: gloo on CPU, nccl on CUDA. ``torchrun -m modelkit train ...`` works
the same way. The global batch size is ``--batch-size``: every step consumes the same global
batch as a single-process run (from the (seed, epoch) permutation), split across ranks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from modelkit.errors import BadInputError, TrainingError


@dataclass(frozen=True)
class LaunchConfig:
    """Where and how many worker processes to start."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None: pick a free one (single node)
    rdzv_endpoint: str | None = None  # host:port for c10d rendezvous (elastic, multi-node)

    @property
    def distributed(self) -> bool:
        """True when more than one process in total would run."""
        return self.nproc_per_node * self.nnodes > 1


def in_worker() -> bool:
    """True inside a torchrun worker (WORLD_SIZE set by the launcher)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the launcher's environment (0, 1, 0 outside)."""
    if not in_worker():
        return 0, 1, 0
    return (
        int(os.environ["RANK"]),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def validate_launch(cfg: LaunchConfig, *, device_type: str) -> LaunchConfig:
    """Check the launch fits this machine; fill a free master port. Returns the final config."""
    import torch
    import torch.distributed as dist

    if cfg.nproc_per_node < 1 or cfg.nnodes < 1:
        raise BadInputError(
            "--nproc-per-node and --nnodes must be >= 1", hint="e.g. --nproc-per-node 2"
        )
    if not 0 <= cfg.node_rank < cfg.nnodes:
        raise BadInputError(
            f"--node-rank {cfg.node_rank} is outside 0..{cfg.nnodes - 1}",
            hint="node ranks count from 0 to --nnodes - 1",
        )
    if device_type == "cuda":
        available = torch.cuda.device_count()
        if cfg.nproc_per_node > available:
            raise BadInputError(
                f"--nproc-per-node {cfg.nproc_per_node} asks for more GPUs than this node has ({available})",
                hint=f"use --nproc-per-node {max(available, 1)} or --device cpu",
            )
        if not dist.is_nccl_available():
            raise BadInputError(
                "NCCL is not available in this torch build, needed for CUDA DDP",
                hint="install a CUDA build of torch, or use --device cpu (gloo)",
            )
    else:
        cores = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
        if cfg.nproc_per_node > cores:
            raise BadInputError(
                f"--nproc-per-node {cfg.nproc_per_node} is more than the {cores} CPU cores available",
                hint=f"use --nproc-per-node {cores} or fewer",
            )
        if not dist.is_gloo_available():
            raise BadInputError("gloo is not available in this torch build", hint="reinstall torch")
    if cfg.rdzv_endpoint:
        return cfg
    port = cfg.master_port
    if port is None:
        if cfg.nnodes > 1:
            raise BadInputError(
                "multi-node training needs --master-port (or --rdzv-endpoint)",
                hint="every node must use the same --master-addr and --master-port",
            )
        port = free_port(cfg.master_addr)
    elif cfg.node_rank == 0 and port_in_use(cfg.master_addr, port):
        raise BadInputError(
            f"port {port} on {cfg.master_addr} is already in use",
            hint="pick another --master-port, or omit it to use a free one",
        )
    return LaunchConfig(cfg.nproc_per_node, cfg.nnodes, cfg.node_rank, cfg.master_addr, port, None)


def launch(cfg: LaunchConfig, train_args: list[str]) -> int:
    """Run ``modelkit train <train_args>`` under torchrun; returns torchrun's exit code."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={cfg.nproc_per_node}",
        f"--nnodes={cfg.nnodes}",
        "--max-restarts=0",
    ]
    if cfg.rdzv_endpoint:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={cfg.rdzv_endpoint}"]
    else:
        cmd += [
            f"--node-rank={cfg.node_rank}",
            f"--master-addr={cfg.master_addr}",
            f"--master-port={cfg.master_port}",
        ]
    cmd += ["-m", "modelkit", "train", *train_args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(cmd, env=env, check=False).returncode


def init_worker(device_type: str) -> Any:
    """Join the process group (nccl on CUDA, gloo on CPU); returns the backend name."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(world()[2])
        dist.init_process_group(backend=backend)
    return backend


def all_reduce_sum(tensor: Any) -> Any:
    """Sum ``tensor`` across ranks in place (no-op outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier_and_check(ok: bool, message: str) -> None:
    """Raise on every rank if any rank reports failure (so all stop together)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        if not ok:
            raise TrainingError(message)
        return
    flag = torch.tensor([0 if ok else 1])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if int(flag):
        raise TrainingError(message)
