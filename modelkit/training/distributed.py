"""Multi-process / multi-node training through PyTorch's own elastic launcher (torchrun).

Launcher side: ``modelkit train --nproc-per-node N`` checks the request against this machine
(:func:`validate_launch`) and runs ``torch.distributed.run`` (torchrun) with
``-m modelkit train <worker args>`` (:func:`launch`); a failing rank stops the others and the
launcher raises one typed error naming the rank. ``torchrun -m modelkit train ...`` works too.

Worker side: inside a worker (RANK/WORLD_SIZE set by torchrun) the trainer joins the process
group (:func:`join`: gloo on CPU, nccl on CUDA) and wraps the model in
DistributedDataParallel. Global batch semantics: every step consumes the same global batch
of ``batch_size`` samples as a single-process run, rank r taking ``idx[r::world_size]``;
the loss is a sum scaled by ``world_size / len(global batch)`` so that DDP's gradient
average equals the global-batch mean gradient.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from modelkit.errors import BadInputError, ModelkitError, TrainingError

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"


# --------------------------------------------------------------------------- launcher side


@dataclass(frozen=True)
class LaunchConfig:
    """Where and how many worker processes to start."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None: a free one, found by torchrun (single node)
    rdzv_endpoint: str | None = None  # host:port for c10d rendezvous (elastic, multi-node)

    @property
    def world_size(self) -> int:
        """Processes in total."""
        return self.nproc_per_node * self.nnodes

    @property
    def distributed(self) -> bool:
        """True when more than one process in total would run."""
        return self.world_size > 1


def in_worker() -> bool:
    """True inside a torchrun worker (RANK and WORLD_SIZE set by the launcher)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


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
    if device_type == "cuda":
        import torch

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


def worker_env(device_type: str, nproc_per_node: int) -> dict[str, str]:
    """Thread settings for the workers: 1 on CPU (no oversubscription), a fair share on CUDA."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    share = 1 if device_type == "cpu" else max(1, available_cores() // nproc_per_node)
    return {"OMP_NUM_THREADS": str(share)}


def launch(cfg: LaunchConfig, worker_args: list[str], *, device_type: str) -> None:
    """Run ``python -m modelkit <worker_args>`` under torch's elastic launcher (in this process).

    Returns when every rank finished; if a rank fails, torchrun stops the others and this
    raises one typed error naming the failing rank (exit code: the rank's own).
    """
    import logging

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ.update(worker_env(device_type, cfg.nproc_per_node))
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
        data = getattr(failure, "error_file_data", None) or {}
        info = data.get("modelkit") if isinstance(data, dict) else None
        if not isinstance(info, dict):
            info = {
                "message": failure.message or f"exited with code {failure.exitcode}",
                "exit_code": 1,
                "secondary": failure.exitcode < 0,  # killed by a signal: stopped by torchrun
                "time": float(failure.timestamp),
            }
        infos.append((bool(info.get("secondary")), float(info.get("time", 0)), rank, info))
    infos.sort(key=lambda t: (t[0], t[1], t[2]))
    _secondary, _t, rank, info = infos[0]
    others = sorted(r for r in failures if r != rank)
    cls = BadInputError if info.get("exit_code") == 2 else ModelkitError
    stopped = ""
    if others:
        stopped = f" (rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} stopped)"
    message = str(info["message"])
    prefix = f"rank {rank}: "
    message = message[len(prefix) :] if message.startswith(prefix) else message
    err = cls(
        f"rank {rank} failed: {message}{stopped}",
        hint=info.get("hint") or "torchrun stopped the other ranks; rank 0 writes the checkpoints",
    )
    if cls is ModelkitError and info.get("exit_code") not in (None, 1, 2):
        err.exit_code = int(info["exit_code"])
    return err


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class World:
    """This process's place: rank, world size, local rank, backend (None: one process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the only rank that writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    def record(self) -> dict[str, Any]:
        """``run.json["distributed"]``."""
        return {"world_size": self.size, "backend": self.backend}


SINGLE = World()


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (0, 1, 0 outside)."""
    if not in_worker():
        return 0, 1, 0
    return (
        int(os.environ["RANK"]),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


class PeerFailure(TrainingError):
    """This rank stopped because another rank failed (not the root cause)."""


_failing = False


def _on_sigterm(signum: int, _frame: Any) -> None:
    global _failing
    if _failing:  # already writing the failure down: let it finish
        return
    _failing = True
    raise PeerFailure("stopped by the launcher: another rank failed")


def join(device_type: str) -> World:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU); SINGLE outside a worker."""
    rank, size, local_rank = env_world()
    if size <= 1:
        return SINGLE
    import threading

    import torch
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise BadInputError(
            "NCCL is not available in this torch build; CUDA training across processes needs it",
            hint="install a CUDA build of torch with NCCL, or use --device cpu (gloo)",
        )
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)  # torchrun stops survivors with SIGTERM
    return World(rank=rank, size=size, local_rank=local_rank, backend=backend)


def mark_failing() -> None:
    """A failure is being recorded: a SIGTERM from the launcher must not interrupt it."""
    global _failing
    _failing = True


def leave(world: World) -> None:
    """Leave the process group (end of a successful run): every rank waits at a barrier first,
    so none tears gloo down while rank 0 is still writing the run (that raced into
    'terminate called without an active exception' at exit)."""
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _comm_device(world: World) -> Any:
    import torch

    return (
        torch.device("cuda", world.local_rank) if world.backend == "nccl" else torch.device("cpu")
    )


def all_reduce_sum(tensor: Any, world: World) -> Any:
    """Sum ``tensor`` across ranks in place (a no-op for one process)."""
    if world.distributed:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_tensor(tensor: Any, world: World) -> list[Any]:
    """Every rank's copy of ``tensor`` (same shape and dtype on all ranks), on the CPU."""
    import torch
    import torch.distributed as dist

    dev = _comm_device(world)
    t = tensor.detach().to(dev).contiguous()
    out = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def _encode(obj: Any) -> Any:
    import torch

    return torch.frombuffer(bytearray(json.dumps(obj, sort_keys=True).encode()), dtype=torch.uint8)


def all_gather_json(obj: Any, world: World) -> list[Any]:
    """Every rank's JSON-able ``obj`` (sent as bytes: no pickle)."""
    import torch

    data = _encode(obj)
    sizes = all_gather_tensor(torch.tensor([len(data)], dtype=torch.int64), world)
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: len(data)] = data
    gathered = all_gather_tensor(padded, world)
    return [
        json.loads(bytes(g[: int(s)].tolist()).decode())
        for g, s in zip(gathered, sizes, strict=True)
    ]


def error_info(exc: BaseException) -> dict[str, Any]:
    """A JSON description of an exception (typed errors keep message, hint and exit code)."""
    if isinstance(exc, ModelkitError):
        return {
            "type": type(exc).__name__,
            "message": exc.message,
            "hint": exc.hint,
            "exit_code": exc.exit_code,
            "secondary": isinstance(exc, (PeerFailure, RemoteError)),
        }
    return {
        "type": type(exc).__name__,
        "message": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}",
        "hint": None,
        "exit_code": 1,
        "secondary": is_peer_failure(exc),
    }


def peer_failure(exc: BaseException) -> PeerFailure:
    """The error of a rank whose collective failed because another rank went away."""
    text = str(exc)
    known = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    reason = next((k.lower() for k in known if k in text), (text.splitlines() or [""])[0][:200])
    return PeerFailure(f"stopped because another rank failed ({reason})")


def is_peer_failure(exc: BaseException) -> bool:
    """True for a collective that failed because another rank went away."""
    import torch.distributed as dist

    if isinstance(exc, PeerFailure):
        return True
    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", RuntimeError)) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    )


class RemoteError(ModelkitError):
    """An error another rank raised, re-raised here so every rank stops the same way."""


def agree(world: World, error: BaseException | None) -> None:
    """Collective check: if any rank failed, every rank raises (the lowest failing rank's error).

    The failing rank re-raises its own exception; the others raise :class:`RemoteError` with
    the same message, hint and exit code. A no-op for one process (``error`` is re-raised).
    """
    if not world.distributed:
        if error is not None:
            raise error
        return
    import torch
    import torch.distributed as dist

    flag = torch.tensor(
        [world.rank if error is not None else world.size], device=_comm_device(world)
    )
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    first = int(flag.item())
    if first == world.size:
        return
    infos = all_gather_json(error_info(error) if error is not None else None, world)
    if error is not None:
        raise error
    info = infos[first]
    err = RemoteError(f"rank {first}: {info['message']}", hint=info.get("hint"))
    err.exit_code = int(info.get("exit_code") or 1)
    raise err


def write_error_file(exc: BaseException, world: World) -> None:
    """Tell torchrun why this worker fails (its TORCHELASTIC_ERROR_FILE), for the launcher."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path or not world.distributed:
        return
    info = {**error_info(exc), "time": time.time(), "rank": world.rank}
    data = {"message": info["message"], "timestamp": int(info["time"]), "modelkit": info}
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass


# --------------------------------------------------------------------------- verbs' entry points


def launch_train(
    cfg: Any,
    out: Any,
    launch_cfg: LaunchConfig,
    *,
    overwrite: bool,
    worker_flags: list[str],
) -> None:
    """Check what can be checked here, then run ``modelkit train`` workers under torchrun.

    Every rank trains exactly the resolved ``cfg`` (passed as a JSON config file).
    """
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from modelkit.errors import RunDirError

    out = Path(out)
    device_type = launch_device_type(cfg.device)
    launch_cfg = validate_launch(launch_cfg, device_type=device_type)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise RunDirError(
            f"--out {out} exists and is not empty",
            hint="pass --overwrite to replace it, or choose another --out",
        )
    tmp = Path(tempfile.mkdtemp(prefix="modelkit-launch-"))
    try:
        config_file = tmp / "config.json"
        config_file.write_text(json.dumps(cfg.to_dict(), sort_keys=True), encoding="utf-8")
        args = ["train", "--config", str(config_file), "--out", str(out)]
        args += (["--overwrite"] if overwrite else []) + worker_flags
        try:
            launch(launch_cfg, args, device_type=device_type)
        except ModelkitError as exc:
            _resume_hint(exc, out, launch_cfg)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def launch_resume(
    run_dir: Any, launch_cfg: LaunchConfig, *, fallback: bool, worker_flags: list[str]
) -> None:
    """Resume a multi-process run at its recorded world size, under torchrun."""
    from modelkit.runs import open_run

    run = open_run(run_dir, require=("config.json",))
    record = run.read_record() if run.record.is_file() else {}
    recorded = int((record.get("distributed") or {}).get("world_size") or 1)
    if recorded != launch_cfg.world_size:
        raise BadInputError(
            f"{run_dir} was trained by {recorded} process(es); --nproc-per-node x --nnodes "
            f"asks for {launch_cfg.world_size}",
            hint=f"resume at the same world size: --nproc-per-node {recorded}"
            if recorded > 1
            else f"modelkit train --resume {run_dir}",
        )
    device_type = launch_device_type(run.train_config().device)
    launch_cfg = validate_launch(launch_cfg, device_type=device_type)
    args = ["train", "--resume", str(run_dir)] + (["--fallback-checkpoint"] if fallback else [])
    try:
        launch(launch_cfg, args + worker_flags, device_type=device_type)
    except ModelkitError as exc:
        _resume_hint(exc, run_dir, launch_cfg)
        raise


def _resume_hint(exc: ModelkitError, out: Any, launch_cfg: LaunchConfig) -> None:
    """After a failed rank: name the intact checkpoint and the command that continues."""
    from pathlib import Path

    from modelkit.training.checkpoint import list_checkpoints

    ckpts = list_checkpoints(Path(out) / "checkpoints")
    if exc.exit_code == 1 and ckpts:
        exc.hint = (
            f"checkpoint {ckpts[-1].name} is intact; continue with: modelkit train --resume "
            f"{out} --nproc-per-node {launch_cfg.nproc_per_node}"
            + (f" --nnodes {launch_cfg.nnodes}" if launch_cfg.nnodes > 1 else "")
        )
