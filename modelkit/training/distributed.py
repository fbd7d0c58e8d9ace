"""Inside a torchrun worker: the process group, the collectives, and failing together.

A worker (RANK/WORLD_SIZE set by torchrun; see :mod:`modelkit.training.launch` for the
launcher) joins the process group (:func:`join`: gloo on CPU, nccl on CUDA); the trainer wraps
the model in DistributedDataParallel. Global batch semantics: every step consumes the same
global batch of ``batch_size`` samples as a single-process run, rank r taking
``idx[r::world_size]``; the loss is a sum scaled by ``world_size / len(global batch)`` so that
DDP's gradient average equals the global-batch mean gradient. :func:`agree` makes a failure on
one rank stop every rank with the same typed error; :func:`write_error_file` tells the
launcher which rank failed first.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from modelkit.errors import BadInputError, ModelkitError, TrainingError
from modelkit.io import exit_now
from modelkit.runs.typed import read_typed

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"


def in_worker() -> bool:
    """True inside a torchrun worker (RANK and WORLD_SIZE set by the launcher)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def exit_process(code: int | str | None) -> NoReturn:
    """End this process as ``sys.exit(code)`` does; a torchrun worker skips the interpreter's
    finalisation (atexit handlers still run and open files are flushed).

    gloo's threads may still be releasing finished collectives whose tensors belong to Python;
    one that needs the GIL while the interpreter finalises calls std::terminate (SIGABRT), and
    torchrun then reports a complete, fully written run as failed (2 in 12 two-process CPU
    runs before this). Every worker entry point (``modelkit``, ``modelkit.repro.worker``) ends
    through here.
    """
    if not in_worker():
        raise SystemExit(code)

    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    exit_now(code or 0)


@dataclass(frozen=True)
class World:
    """This process's place: rank, world size, local rank, backend (None: one process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    sharded: bool = False  # FSDP2 (modelkit.training.sharding) instead of DDP

    @property
    def main(self) -> bool:
        """Rank 0: the only rank that writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    def record(self) -> dict[str, Any]:
        """``run.json["distributed"]`` (``"strategy": "fsdp2"`` for a sharded run)."""
        out: dict[str, Any] = {"world_size": self.size, "backend": self.backend}
        return {**out, "strategy": "fsdp2"} if self.sharded else out


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
    so none tears gloo down while rank 0 is still writing the run. The worker process then ends
    through :func:`exit_process`, without interpreter finalisation, where a gloo thread still
    releasing a finished collective aborts ('terminate called without an active exception')."""
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


@dataclass(frozen=True)
class RankExit:
    """Why a rank failed, as it tells the other ranks (:func:`agree`) and the launcher (the
    ``modelkit`` object of its torchrun error file): typed errors keep message, hint and exit
    code; ``secondary`` marks a rank stopped by another's failure."""

    type: str | None = None
    message: str = ""
    hint: str | None = None
    exit_code: int | None = None
    secondary: bool = False
    time: float = 0.0
    rank: int | None = None

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> RankExit:
        """A rank's record as sent or written (a wrong type is a ModelkitError naming it)."""
        return read_typed(cls, data, source=source, error=ModelkitError)


@dataclass(frozen=True)
class _ErrorFile:
    """A worker's torchrun error file: torchrun's own keys, and ours under ``modelkit``."""

    modelkit: RankExit | None = None


def read_error_file(data: Any) -> RankExit | None:
    """The :class:`RankExit` a failed worker left in its error file (None when it left none:
    torchrun's own file, or a rank killed before it could write)."""
    try:
        return read_typed(_ErrorFile, data, source="error file", error=ModelkitError).modelkit
    except ModelkitError:
        return None


def error_info(exc: BaseException) -> RankExit:
    """How a rank describes its exception to the others (typed errors keep message, hint and
    exit code)."""
    if isinstance(exc, ModelkitError):
        return RankExit(
            type=type(exc).__name__,
            message=exc.message,
            hint=exc.hint,
            exit_code=exc.exit_code,
            secondary=isinstance(exc, (PeerFailure, RemoteError)),
        )
    return RankExit(
        type=type(exc).__name__,
        message=f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}",
        hint=None,
        exit_code=1,
        secondary=is_peer_failure(exc),
    )


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
    infos = all_gather_json(_written(error_info(error)) if error is not None else None, world)
    if error is not None:
        raise error
    info = RankExit.from_dict(infos[first], source=f"rank {first}")
    err = RemoteError(f"rank {first}: {info.message}", hint=info.hint)
    err.exit_code = int(info.exit_code or 1)
    raise err


def write_error_file(exc: BaseException, world: World) -> None:
    """Tell torchrun why this worker fails (its TORCHELASTIC_ERROR_FILE), for the launcher."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path or not world.distributed:
        return
    info = replace(error_info(exc), time=time.time(), rank=world.rank)
    data = {"message": info.message, "timestamp": int(info.time), "modelkit": _written(info)}
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass


def _written(info: RankExit) -> dict[str, Any]:
    """The record as JSON (every field, None included, as the launcher reads it)."""
    return {f: getattr(info, f) for f in RankExit.__dataclass_fields__}
