"""Where the built-in trainer is (:class:`TrainState`), and its :class:`~modelkit.runs.Checkpoint`.

A checkpoint is everything needed to continue bitwise: model, optimizer, LR scheduler, grad
scaler, every RNG state, the data position (epoch, batch, step) and the logging accumulators.
:func:`capture` builds the trainer's one :class:`~modelkit.runs.Checkpoint`; :func:`restore`
loads one back into a trainer. The file format lives in :mod:`modelkit.runs.checkpoint` only
(a sharded run's model and optimizer: :mod:`modelkit.training.sharded_checkpoint`).

Under DDP capturing is collective: each rank's RNG states and loss accumulator are gathered
and rank 0 writes one file (``rank{r}.`` prefixes for r > 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from modelkit.errors import BadInputError, WorldSizeMismatch
from modelkit.runs.checkpoint import Checkpoint
from modelkit.training import distributed as D


@dataclass
class TrainState:
    """Where training is: the exact data position plus the logging accumulators."""

    epoch: int = 0  # 0-based epoch in progress
    batch: int = 0  # next batch index within the epoch
    step: int = 0  # optimizer steps taken
    samples: int = 0
    train_time: float = 0.0
    since_log: int = 0
    last_train_loss: float | None = None
    best_value: float | None = None  # keep_best: the best held-out metric so far
    best_epoch: int = 0
    best_step: int = 0
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))

    def to_meta(self) -> dict[str, Any]:
        """JSON part of the state (``loss_sum`` travels as a tensor)."""
        return {k: v for k, v in asdict(self).items() if k != "loss_sum"}


def capture(t: Any) -> Checkpoint:
    """The checkpoint of trainer ``t`` now. Collective under DDP (every rank calls it).

    A sharded run's model and optimizer are written as shards by its checkpoint
    (:func:`modelkit.training.sharded_checkpoint.save_sharded`), not captured here."""
    world = t.world
    cuda = [t.device.index or 0] if world.distributed and t.device.type == "cuda" else None
    objects: dict[str, Any] = {"distributed": world.record()}
    if t.scaler.is_enabled():
        objects["scaler"] = t.scaler.state_dict()
    sharded = bool(getattr(t, "sharded", False))
    ckpt = Checkpoint.capture(
        step=t.state.step,
        model=torch.nn.Module() if sharded else t.model,
        optimizer=None if sharded else t.optimizer,
        scheduler=t.scheduler,
        state=t.state.to_meta(),
        tensors={"loss_sum": t.state.loss_sum},
        objects=objects,
        cuda_devices=cuda,
    )
    if world.distributed:
        mine = {**ckpt.rng_tensors, **ckpt.tensors}
        names = sorted(mine)
        metas = D.all_gather_json({"names": names, "rng": ckpt.rng}, world)
        parts = [D.all_gather_tensor(mine[name], world) for name in names]
        for r in range(1, world.size):
            for i, name in enumerate(metas[r]["names"]):
                ckpt.tensors[f"rank{r}.{name}"] = parts[i][r]
        ckpt.objects["rank_rng"] = [metas[r]["rng"] for r in range(1, world.size)]
    return ckpt


def restore(t: Any, ckpt: Checkpoint) -> None:
    """Load ``ckpt`` (see :func:`capture`) into trainer ``t``; rank r > 0 takes its own RNGs.
    Checks the world size, the sharding and (unsharded) that the checkpoint fits the model
    and optimizer before loading anything. Collective for a sharded run."""
    saved_world = int((ckpt.objects.get("distributed") or {}).get("world_size") or 1)
    if saved_world != t.world.size:
        raise WorldSizeMismatch(saved_world, t.world.size, what=f"checkpoint step {ckpt.step}")
    sharded = ckpt.objects.get("sharded")
    if bool(sharded) != bool(getattr(t, "sharded", False)):
        raise BadInputError(
            f"checkpoint step {ckpt.step} was written by a "
            f"{'sharded' if sharded else 'replicated (DDP)'} run; this one is not",
            hint="resume with the run's own config (shard as it was)",
        )
    rank = t.world.rank
    if rank > 0:
        prefix = f"rank{rank}."
        mine = {k[len(prefix) :]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}
        ckpt.rng_tensors = {k: v for k, v in mine.items() if k.startswith("rng.")}
        ckpt.rng = ckpt.objects["rank_rng"][rank - 1]
        ckpt.tensors = {k: v for k, v in mine.items() if not k.startswith("rng.")}
    if sharded and ckpt.path is not None:
        from modelkit.training.sharded_checkpoint import load_sharded

        load_sharded(t, ckpt.path, sharded)
        ckpt.restore_progress(t.scheduler)
    else:
        ckpt.restore(t.model, t.optimizer, t.scheduler)
    if t.scaler.is_enabled() and "scaler" in ckpt.objects:
        t.scaler.load_state_dict(ckpt.objects["scaler"])
    loss_sum = ckpt.tensors["loss_sum"].to(t.device, copy=True)
    t.state = TrainState(**ckpt.state, loss_sum=loss_sum)
