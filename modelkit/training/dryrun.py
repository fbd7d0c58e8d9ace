"""Dry-build the recipe before the first step: a value that torch accepts at construction but
fails on later (``StepLR(gamma="x")``, ``step_size=0``, ``CosineAnnealingLR(T_max=0)``, a
``OneCycleLR`` shorter than the run, three Adam betas, a crop larger than the images, a loss
that raises or returns no scalar) is refused now, as a config error naming the table, instead
of as a crash in step 1 or step 10,000.

The optimizer and schedule are rebuilt from the same tables on a throwaway one-element
parameter and stepped through the whole run (:data:`MAX_DRY_STEPS` at most); the augmentation
and the loss run on one batch of two samples, with the model in eval mode under ``no_grad``
and the RNG state restored, so the real run is unchanged.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from modelkit.errors import ConfigError, ModelkitError

MAX_DRY_STEPS = 100_000


def dry_build(s: Any, tables: dict[str, Any]) -> None:
    """Exercise a :class:`~modelkit.training.setup.Setup`'s recipe (see the module doc)."""
    _dry_schedule(s, tables)
    _dry_augment(s)
    if not s.world.sharded:  # a sharded forward is collective: the first step checks it
        _dry_loss(s)


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def _kw(table: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in table.items() if k != "name")


def _dry_schedule(s: Any, tables: dict[str, Any]) -> None:
    from modelkit.training.optim import build_optimizer, build_scheduler

    opt_table, sched_table = tables["optimizer"], tables["lr_schedule"]
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(opt_table, [param])
    param.grad = torch.zeros(1)
    name = opt_table["name"] if isinstance(opt_table, dict) else opt_table
    try:
        optimizer.step()
    except Exception as exc:
        raise ConfigError(
            f"optimizer {name}({_kw(opt_table) if isinstance(opt_table, dict) else ''}) fails "
            f"at its first step: {_first_line(exc)}",
            hint=f"check the optimizer table's values against torch.optim.{name}",
        ) from None
    cfg = s.config
    total = s.steps_per_epoch * cfg.epochs
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    schedule = build_scheduler(
        sched_table, optimizer, steps_per_epoch=s.steps_per_epoch, epochs=cfg.epochs,
        max_steps=cfg.max_steps,
    )  # fmt: skip
    if schedule is not None:
        _step_schedule(schedule, sched_table, total, s.steps_per_epoch)


def _step_schedule(schedule: Any, table: Any, total: int, per_epoch: int) -> None:
    """Step a throwaway schedule as the loop would, through ``total`` optimizer steps."""
    name = table["name"] if isinstance(table, dict) else table
    described = f"lr_schedule {name}({_kw(table) if isinstance(table, dict) else ''})"
    limit = getattr(schedule.scheduler, "total_steps", None)
    if isinstance(limit, int) and schedule.interval == "step" and limit < total:
        raise ConfigError(
            f"{described} has total_steps {limit}, but the run takes {total} optimizer steps",
            hint="leave total_steps out (it defaults to the run's length) or raise it",
        )
    step = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for step in range(1, min(total, MAX_DRY_STEPS) + 1):
                schedule.after_step()
                if step % per_epoch == 0 or step == total:
                    schedule.after_epoch(test_loss=0.0)
                lr = schedule.last_lr()
                if not math.isfinite(lr) or lr < 0:
                    raise ValueError(f"the learning rate became {lr}")
    except Exception as exc:
        raise ConfigError(
            f"{described} fails at step {step} of {total}: {_first_line(exc)}",
            hint=f"check the lr_schedule table's values against torch.optim.lr_scheduler.{name}",
        ) from None


def _batch(s: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = s.data.x_train[:2], s.data.y_train[:2]
    return x.to(s.device), y.to(s.device)


def _dry_augment(s: Any) -> None:
    aug = s.augment
    if aug is None:
        return
    x, _ = _batch(s)
    crop = getattr(aug, "random_crop", 0)
    if crop and x.ndim == 4 and crop >= min(x.shape[-2:]):
        raise ConfigError(
            f"augment.random_crop {crop} is not smaller than the images "
            f"({x.shape[-2]}x{x.shape[-1]} pixels)",
            hint=f"use a random_crop below {min(x.shape[-2:])} (e.g. 4 for 32x32 images)",
        )
    try:
        out = aug(x, seed=s.config.seed, epoch=0, batch=0)
    except Exception as exc:
        raise ConfigError(
            f"augment {aug} fails on a batch of shape {list(x.shape)}: {_first_line(exc)}",
            hint="check the augment table against the data (see `modelkit train --help`)",
        ) from None
    if tuple(out.shape) != tuple(x.shape):
        raise ConfigError(
            f"augment changes the batch shape {list(x.shape)} to {list(out.shape)}",
            hint="augmentations must keep the sample shape",
        )


def _dry_loss(s: Any) -> None:
    x, y = _batch(s)
    was_training = s.model.training
    devices = [s.device] if s.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            out = s.task.forward(s.model.eval(), x.contiguous(memory_format=s.mf), y)
            loss = s.task.loss(out, y, s.loss_fn)
    except ModelkitError:
        raise  # a user loss: UserCodeError naming it
    except Exception as exc:
        raise ConfigError(
            f"loss {s.config.loss!r} fails on one batch: {_first_line(exc)}",
            hint="pick a loss that fits the model's output and the labels",
        ) from None
    finally:
        s.model.train(was_training)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        got = list(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ConfigError(
            f"loss {s.config.loss!r} returned {got}, not a scalar tensor",
            hint="a loss returns the batch mean (a 0-d tensor)",
        )
