"""What a checkpoint holds, built in one place and restored in one place.

A checkpoint is everything needed to continue bitwise: model, optimizer, LR scheduler, grad
scaler, every RNG state, the data position (epoch, batch, step) and the logging accumulators
(:class:`TrainState`). :func:`checkpoint_payload` builds the one checkpoint dict the run
writer saves; :func:`restore` loads a verified checkpoint back into a trainer.

Under DDP building the payload is collective: each rank's RNG states and loss accumulator
are gathered and rank 0 writes one file (``rank{r}.`` prefixes for r > 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelkit.errors import BadInputError, WorldSizeMismatch
from modelkit.training import distributed as D
from modelkit.training.checkpoint import split_tensors, unflatten_optimizer
from modelkit.training.determinism import capture_rng, restore_rng


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


def checkpoint_payload(t: Any) -> dict[str, Any]:
    """The checkpoint of trainer ``t``: keyword arguments of ``save_checkpoint`` (no directory).

    Collective under DDP (every rank calls it; every rank gets the same payload back).
    """
    world = t.world
    cuda = [t.device.index or 0] if world.distributed and t.device.type == "cuda" else None
    rng_tensors, rng_meta = capture_rng(cuda)
    extra = {**rng_tensors, "loss_sum": t.state.loss_sum}
    objects: dict[str, Any] = {"rng": rng_meta, "distributed": world.record()}
    if t.scheduler is not None:
        objects["scheduler"] = t.scheduler.state_dict()
    if t.scaler.is_enabled():
        objects["scaler"] = t.scaler.state_dict()
    if world.distributed:
        names = sorted(extra)
        metas = D.all_gather_json({"names": names, "rng": rng_meta}, world)
        parts = [D.all_gather_tensor(extra[name], world) for name in names]
        for r in range(1, world.size):
            for i, name in enumerate(metas[r]["names"]):
                extra[f"rank{r}.{name}"] = parts[i][r]
        objects["rank_rng"] = [metas[r]["rng"] for r in range(1, world.size)]
    return {
        "step": t.state.step,
        "model": t.model,
        "optimizer": t.optimizer,
        "scheduler": t.scheduler,
        "state": t.state.to_meta(),
        "extra_tensors": extra,
        "objects": objects,
    }


def restore(
    t: Any, tensors: dict[str, torch.Tensor], meta: dict[str, Any], *, path: Path | None = None
) -> None:
    """Load a verified checkpoint (see :func:`checkpoint_payload`) into trainer ``t``.

    A run's checkpoints (written by :meth:`modelkit.tracking.Run.checkpoint`) keep the loop's
    own tensors and objects under ``user``; repro's dumps keep them at the top level. A
    sharded run's checkpoint (``path``: its head file) holds the model and optimizer in the
    shard folder it names (:mod:`modelkit.training.sharded_checkpoint`); collective then.
    """
    objects = meta.get("objects", {})
    own = objects.get("user", objects)
    saved_world = int((own.get("distributed") or {}).get("world_size") or 1)
    if saved_world != t.world.size:
        raise WorldSizeMismatch(saved_world, t.world.size, what=f"checkpoint step {meta['step']}")
    sharded = own.get("sharded")
    if bool(sharded) != bool(getattr(t, "sharded", False)):
        raise BadInputError(
            f"checkpoint step {meta['step']} was written by a "
            f"{'sharded' if sharded else 'replicated (DDP)'} run; this one is not",
            hint="resume with the run's own config (shard as it was)",
        )
    model_state, optim_tensors, extra = split_tensors(tensors)
    if sharded and path is not None:
        from modelkit.training.sharded_checkpoint import load_sharded

        load_sharded(t, path, sharded)
    else:
        t.model.load_state_dict(model_state, strict=True)
        t.optimizer.load_state_dict(unflatten_optimizer(optim_tensors, meta["optimizer"]))
    if t.scheduler is not None:
        t.scheduler.load_state_dict(objects["scheduler"])
    if t.scaler.is_enabled() and "scaler" in own:
        t.scaler.load_state_dict(own["scaler"])
    rng = {k: v for k, v in extra.items() if k.startswith("rng.")}
    mine = {k.removeprefix("user."): v for k, v in extra.items() if not k.startswith("rng.")}
    rank, rng_meta = t.world.rank, objects["rng"]
    if rank > 0:
        prefix = f"rank{rank}."
        mine = {k[len(prefix) :]: v for k, v in mine.items() if k.startswith(prefix)}
        rng = {k: v for k, v in mine.items() if k.startswith("rng.")}
        rng_meta = own["rank_rng"][rank - 1]
    t.state = TrainState(**meta["state"], loss_sum=mine["loss_sum"].to(t.device, copy=True))
    restore_rng(rng, rng_meta)
