"""Sharded training (FSDP2): parameters, gradients and optimizer state split across ranks.

``shard = true`` (``modelkit train --shard``) replaces DDP's replicas with PyTorch's FSDP2
(:func:`torch.distributed.fsdp.fully_shard`): every module that owns parameters becomes one
FSDP unit (its parameters all-gathered just before its forward/backward and freed after),
then the root. Each rank keeps ``1/world_size`` of every parameter, gradient and optimizer
state as a DTensor. Gradients are reduce-scattered with the same average DDP uses, so the
global-batch semantics of :mod:`modelkit.training.distributed` hold unchanged.

Everything that needs whole tensors gathers them one tensor at a time (:func:`full_items`):
fingerprints hash them on rank 0 as they arrive. The final weights are gathered one file at a
time (:class:`GatheredWeights`, :func:`drain_weights`): the files are planned from shapes and
dtypes (:func:`modelkit.weights.plan_weights`), and rank 0 holds one file's tensors at a time,
the other ranks one tensor. The model is built on the meta device where that is exact
(:mod:`modelkit.training.meta_init`). Checkpoints are in
:mod:`modelkit.training.sharded_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from modelkit.errors import ShardingUnsupported
from modelkit.training import distributed as D
from modelkit.weights import plan_weights

# options that cannot be combined with sharding yet (TrainConfig keys / RunOptions fields)
UNSUPPORTED = {
    "compile": "torch.compile of a sharded model is not supported here yet",
    "keep_best": "keep_best would gather the whole model at every improving epoch",
    "precision": "fp16 needs a sharded grad scaler (use bf16)",
}


def check_support() -> None:
    """Raise :class:`ShardingUnsupported` when this torch lacks FSDP2 or DCP's safetensors IO."""
    import torch.distributed as dist

    if not dist.is_available():
        raise ShardingUnsupported("torch", "this torch build has no torch.distributed")
    try:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        raise ShardingUnsupported(
            "torch", f"torch {torch.__version__} has no torch.distributed.fsdp.fully_shard"
        ) from None
    missing = [
        n for n in ("HuggingFaceStorageWriter", "HuggingFaceStorageReader") if not hasattr(dcp, n)
    ]
    if missing:
        raise ShardingUnsupported(
            "torch",
            f"torch {torch.__version__} has no torch.distributed.checkpoint.{missing[0]} "
            "(sharded checkpoints are written as safetensors through it)",
        )


def check_config(config: Any, *, world_size: int, options: Any = None) -> None:
    """Refuse a sharded run that cannot work as configured (before anything is written)."""
    if not config.shard:
        return
    check_support()
    if world_size < 2:
        raise ShardingUnsupported(
            "processes", f"shard=True needs 2 or more processes, this run has {world_size}"
        )
    bad = [k for k in ("compile", "keep_best") if getattr(config, k)]
    bad += ["precision"] if config.precision == "fp16" else []
    if options is not None and (options.perturb or options.dump_dir is not None):
        raise ShardingUnsupported(
            "option",
            "modelkit repro's state dumps and test hooks need whole tensors",
            option="repro",
        )
    if bad:
        raise ShardingUnsupported("option", UNSUPPORTED[bad[0]], option=bad[0])


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The submodules that become FSDP units: those owning parameters, deepest first.

    A module whose own parameter is also used by another module (tied weights) is left to
    its parent, so a shared parameter is never split across units.
    """
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    units = [
        m
        for name, m in model.named_modules()
        if name
        and any(True for _ in m.parameters(recurse=False))
        and all(owners[id(p)] == 1 for p in m.parameters(recurse=False))
    ]
    return units[::-1]


def shard_model(model: torch.nn.Module, world: D.World, device: torch.device) -> int:
    """Apply ``fully_shard`` to every unit and the root, in place; returns the unit count."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world.size,))
    units = shard_units(model)
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return len(units) + 1


def is_sharded(model: torch.nn.Module) -> bool:
    """True for a module that ``fully_shard`` was applied to."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def reshard(model: torch.nn.Module) -> None:
    """Free every unit's gathered parameters (the root keeps them after a forward)."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def sync_buffers(model: torch.nn.Module, world: D.World) -> None:
    """Broadcast rank 0's buffers (BatchNorm statistics, ...) to every rank, as DDP does
    before each forward; FSDP2 shards parameters only and leaves buffers per rank."""
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def full_items(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, whole tensor)`` of ``model.state_dict()``, gathered one tensor at a time.

    Collective: every rank must iterate to the end in step. Each rank briefly holds one
    whole tensor (the one being gathered), never the whole model.
    """
    from torch.distributed.tensor import DTensor

    for name, t in model.state_dict().items():
        yield name, (t.full_tensor() if isinstance(t, DTensor) else t).detach()


class GatheredView:
    """A stand-in for the model whose ``state_dict().items()`` gathers whole tensors lazily,
    for code that hashes a model's state (:func:`modelkit.training.fingerprint.step_fingerprint`)
    on rank 0 while the other ranks call :func:`drain` in step."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model

    def state_dict(self) -> _LazyState:
        """An object with ``items()``: the gathered tensors, one at a time."""
        return _LazyState(self._model)


class _LazyState:
    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return full_items(self._model)


def drain(model: torch.nn.Module) -> None:
    """Take part in a gather that rank 0 consumes (:class:`GatheredView`) without keeping it."""
    for _ in full_items(model):
        pass


def even_out_eval(t: Any) -> None:
    """After trainer ``t`` evaluated its part of the held-out split: run throw-away forwards
    until this rank made as many (each one all-gathers parameters) as the rank with the most
    held-out batches, then free the gathered parameters."""
    world, data, bs = t.world, t.data, t.config.eval_batch_size
    counts = [-(-len(part) // bs) for part in data.x_test.tensor_split(world.size)]
    probe = data.x_test[:1].to(t.device).contiguous(memory_format=t.mf)
    model = t.model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _ in range(max(counts) - counts[world.rank]):
            with t.autocast():
                model(probe)
    model.train(was_training)
    reshard(model)


def weight_specs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Stand-ins of ``model.state_dict()`` for planning the weights' files
    (:func:`modelkit.weights.plan_weights`): a sharded tensor as a meta tensor of the whole
    tensor's shape and dtype (what its gather returns, a fresh whole tensor), an unsharded one
    (a buffer) as itself on the CPU; equal on every rank."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, t in model.state_dict().items():
        if isinstance(t, DTensor) or t.device.type != "cpu":
            t = torch.empty(t.shape, dtype=t.dtype, device="meta")
        out[name] = t
    return out


def gather(model: torch.nn.Module, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, whole tensor on the CPU)`` for ``names`` of ``model.state_dict()``, one at a
    time. Collective: every rank gathers the same names in the same order."""
    from torch.distributed.tensor import DTensor

    state = model.state_dict()
    for name in names:
        t = state[name]
        yield name, (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu()


class GatheredWeights:
    """Rank 0's source of a sharded model's final weights
    (:meth:`modelkit.runs.session.RunSession.save_weights`): each ``fetch`` gathers one file's
    tensors whole, while the other ranks run :func:`drain_weights` in step. Before each file
    every rank checks in (:func:`~modelkit.training.distributed.agree`), so a write that failed
    on rank 0 stops every rank at the next file with its error."""

    def __init__(self, model: torch.nn.Module, world: D.World) -> None:
        self.model, self.world = model, world

    def specs(self) -> dict[str, torch.Tensor]:
        """The stand-ins every rank plans the files from."""
        return weight_specs(self.model)

    def fetch(self, names: list[str]) -> dict[str, torch.Tensor]:
        """One file's tensors, whole (collective)."""
        D.agree(self.world, None)
        return dict(gather(self.model, names))


def drain_weights(model: torch.nn.Module, world: D.World, max_shard_size: int | str | None) -> None:
    """A rank > 0's part of rank 0's :class:`GatheredWeights` save: the same plan, the same
    gathers in the same order, nothing kept; then the final check-in (rank 0's outcome)."""
    plan = plan_weights(weight_specs(model), max_shard_size)
    for _, names in plan.files:
        D.agree(world, None)
        for _ in gather(model, list(names)):
            pass
    D.agree(world, None)


def peak_memory(device: torch.device) -> dict[str, int]:
    """This process's peak resident memory (and peak CUDA allocation) in bytes."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}
    if device.type == "cuda":
        out["cuda_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out
