"""Starting workers: ``modelkit train --nproc-per-node N`` through PyTorch's own elastic
launcher (torchrun).

:func:`validate_launch` checks the request against this machine (processes vs GPUs/cores,
backend, port); :func:`launch` runs ``torch.distributed.run`` (torchrun) with
``-m modelkit train <worker args>``; a failing rank stops the others and :func:`launch_failure`
turns the ranks' reports into one typed error naming the root cause. ``torchrun -m modelkit
train ...`` works too. The worker side is :mod:`modelkit.training.distributed`.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

from modelkit.errors import BadInputError, ModelkitError
from modelkit.training.distributed import RankExit, read_error_file


@dataclass(frozen=True)
class LaunchConfig:
    """Where and how many worker processes to start."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None: a free one, found by torchrun (single node)
    rdzv_endpoint: str | None = None  # host:port for c10d rendezvous (elastic, multi-node)

    @classmethod
    def requested(
        cls,
        nproc_per_node: int | None,
        nnodes: int | None,
        node_rank: int,
        master_addr: str,
        master_port: int | None,
        rdzv_endpoint: str | None,
    ) -> LaunchConfig | None:
        """The launch the flags ask for; None when no launch flag was given (one process)."""
        if nproc_per_node is None and nnodes is None and rdzv_endpoint is None:
            return None
        return cls(
            nproc_per_node or 1, nnodes or 1, node_rank, master_addr, master_port, rdzv_endpoint
        )

    @property
    def world_size(self) -> int:
        """Processes in total."""
        return self.nproc_per_node * self.nnodes

    @property
    def distributed(self) -> bool:
        """True when more than one process in total would run."""
        return self.world_size > 1


def port_in_use(host: str, port: int) -> bool:
    """True when ``host:port`` cannot be bound (something listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - macOS/Windows


def launch_device_type(device: str) -> str:
    """``cuda`` or ``cpu`` for a config's device string (``auto`` = cuda when available)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInputError(
                "--device cuda asked for, but no CUDA device is available",
                hint="use --device cpu (gloo) for multi-process CPU training",
            )
        if device != "cuda":
            raise BadInputError(
                f"--device {device} names one GPU; each rank uses its own (cuda:LOCAL_RANK)",
                hint="use --device cuda with --nproc-per-node",
            )
        return "cuda"
    return "cpu"


def validate_launch(cfg: LaunchConfig, *, device_type: str) -> LaunchConfig:
    """Check the launch fits this machine (processes vs GPUs/cores, backend, port)."""
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
    if not dist.is_available():
        raise BadInputError(
            "this torch build has no torch.distributed", hint="install a standard torch wheel"
        )
    _check_processes_fit(cfg, device_type=device_type)
    return _check_rendezvous(cfg)


def _check_processes_fit(cfg: LaunchConfig, *, device_type: str) -> None:
    """As many processes as GPUs (or cores) at most, with the collective backend they need."""
    import torch
    import torch.distributed as dist

    if device_type == "cuda":
        gpus = torch.cuda.device_count()
        if cfg.nproc_per_node > gpus:
            raise BadInputError(
                f"--nproc-per-node {cfg.nproc_per_node} asks for more GPUs than this node has ({gpus})",
                hint=f"use --nproc-per-node {gpus} (one process per GPU), or --device cpu",
            )
        if not dist.is_nccl_available():
            raise BadInputError(
                "NCCL is not available in this torch build; CUDA training across processes needs it",
                hint="install a CUDA build of torch with NCCL, or use --device cpu (gloo)",
            )
    else:
        cores = available_cores()
        if cfg.nproc_per_node > cores:
            raise BadInputError(
                f"--nproc-per-node {cfg.nproc_per_node} is more than the {cores} CPU cores available",
                hint=f"use --nproc-per-node {cores} or fewer",
            )
        if not dist.is_gloo_available():
            raise BadInputError(
                "gloo is not available in this torch build; CPU training across processes needs it",
                hint="install a standard torch wheel",
            )


def _check_rendezvous(cfg: LaunchConfig) -> LaunchConfig:
    """A HOST:PORT rendezvous endpoint, or a free master port (multi-node: a given one)."""
    if cfg.rdzv_endpoint:
        if ":" not in cfg.rdzv_endpoint:
            raise BadInputError(
                f"--rdzv-endpoint '{cfg.rdzv_endpoint}' must be HOST:PORT",
                hint="e.g. --rdzv-endpoint node0.example:29400",
            )
        return cfg
    if cfg.master_port is None:
        if cfg.nnodes > 1:
            raise BadInputError(
                "multi-node training needs --master-port (or --rdzv-endpoint)",
                hint="every node passes the same --master-addr and --master-port",
            )
        return cfg  # torchrun's standalone rendezvous picks a free port itself
    if not 1 <= cfg.master_port <= 65535:
        raise BadInputError(
            f"--master-port {cfg.master_port} is not a TCP port", hint="use 1024..65535"
        )
    if cfg.node_rank == 0 and port_in_use(cfg.master_addr, cfg.master_port):
        raise BadInputError(
            f"port {cfg.master_port} on {cfg.master_addr} is already in use",
            hint="pick another --master-port, or leave it out to let torchrun find a free one",
        )
    return cfg


def torchrun_args(cfg: LaunchConfig) -> list[str]:
    """torchrun's own flags for ``cfg`` (before ``-m module ...``)."""
    args = [
        f"--nproc-per-node={cfg.nproc_per_node}",
        f"--nnodes={cfg.nnodes}",
        "--max-restarts=0",
    ]
    if cfg.rdzv_endpoint:
        return [*args, "--rdzv-backend=c10d", f"--rdzv-endpoint={cfg.rdzv_endpoint}"]
    if cfg.master_port is None:
        return [*args, "--standalone"]
    return [
        *args,
        f"--node-rank={cfg.node_rank}",
        f"--master-addr={cfg.master_addr}",
        f"--master-port={cfg.master_port}",
    ]


# FSDP2 allocates and frees every unit's gathered parameters twice a step; on CPU, glibc's
# sliding mmap threshold then serves them from the heap, which fragments: the resident memory
# of a sharded CPU run grew by ~1 P (the parameters' bytes) per step in a measurement
# (docs/distributed.md). A fixed threshold keeps large blocks in mmap, returned on free.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def worker_env(device_type: str, nproc_per_node: int, *, sharded: bool = False) -> dict[str, str]:
    """Thread settings for the workers: 1 on CPU (no oversubscription), a fair share on CUDA;
    for sharded CPU runs a fixed glibc mmap threshold (unless the environment sets one)."""
    env = {k: v for k, v in MALLOC_ENV.items() if k not in os.environ}
    env = env if sharded and device_type == "cpu" else {}
    if "OMP_NUM_THREADS" in os.environ:
        return env
    share = 1 if device_type == "cpu" else max(1, available_cores() // nproc_per_node)
    return {**env, "OMP_NUM_THREADS": str(share)}


def launch(
    cfg: LaunchConfig, worker_args: list[str], *, device_type: str, sharded: bool = False
) -> None:
    """Run ``python -m modelkit <worker_args>`` under torch's elastic launcher (in this process).

    Returns when every rank finished; if a rank fails, torchrun stops the others and this
    raises one typed error naming the failing rank (exit code: the rank's own).
    """
    import logging

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ.update(worker_env(device_type, cfg.nproc_per_node, sharded=sharded))
    args = torchrun.parse_args([*torchrun_args(cfg), "-m", "modelkit", *worker_args])
    # the launcher's failure report is ours (below); keep torchrun's logger to real warnings
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        torchrun.run(args)
    except ChildFailedError as exc:
        raise launch_failure(exc.failures) from None


def launch_failure(failures: dict[int, Any]) -> ModelkitError:
    """One typed error for the failed ranks: the root cause, not a rank stopped by it."""
    infos = []
    for rank, failure in sorted(failures.items()):
        info = read_error_file(getattr(failure, "error_file_data", None) or {})
        if info is None:
            info = RankExit(
                message=failure.message or f"exited with code {failure.exitcode}",
                exit_code=1,
                # torchrun stops the other ranks with SIGTERM (SIGKILL after a grace period);
                # any other signal (SIGABRT, SIGSEGV, ...) is the rank's own crash
                secondary=failure.exitcode in (-signal.SIGTERM, -signal.SIGKILL),
                time=float(failure.timestamp),
            )
        infos.append((bool(info.secondary), float(info.time), rank, info))
    infos.sort(key=lambda t: (t[0], t[1], t[2]))
    _secondary, _t, rank, info = infos[0]
    others = sorted(r for r in failures if r != rank)
    cls = BadInputError if info.exit_code == 2 else ModelkitError
    stopped = ""
    if others:
        stopped = f" (rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} stopped)"
    message = str(info.message)
    prefix = f"rank {rank}: "
    message = message[len(prefix) :] if message.startswith(prefix) else message
    err = cls(
        f"rank {rank} failed: {message}{stopped}",
        hint=info.hint or "torchrun stopped the other ranks; rank 0 writes the checkpoints",
    )
    if cls is ModelkitError and info.exit_code not in (None, 1, 2):
        err.exit_code = int(info.exit_code)
    return err
