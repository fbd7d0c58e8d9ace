"""Optimizers, learning-rate schedules and gradient clipping, by name from the config.

Any optimizer in ``torch.optim`` and any scheduler in ``torch.optim.lr_scheduler`` is
reachable by its class name (case-insensitive) with keyword arguments::

    optimizer = {name = "Adadelta", lr = 1.0}
    lr_schedule = {name = "StepLR", step_size = 1, gamma = 0.7, interval = "epoch"}

The older short forms stay valid: ``optimizer = "adam"`` (plus the top-level ``lr``,
``weight_decay`` and ``momentum`` keys) and ``lr_schedule = "none" | "cosine" | "step"``.
Both forms are normalised into one table (:func:`optimizer_spec`, :func:`schedule_spec`);
the run record stores the normalised tables, so resume and repro build the same objects.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from modelkit.errors import ConfigError, did_you_mean

# optimizers that take ``fused=True``: one kernel over all parameters (3x faster than foreach
# for the MLP on CPU); the fast path depends on it
FUSED = ("adam", "adamw", "sgd")
# reachable by name but unusable from a config: they need a closure or other schedulers
UNUSABLE_OPTIMIZERS = {
    "lbfgs": "LBFGS needs a closure that re-evaluates the loss; the loop takes one step per batch",
    "sparseadam": "SparseAdam needs sparse gradients (nn.Embedding(sparse=True)) only",
}
UNUSABLE_SCHEDULERS = {
    "lambdalr": "LambdaLR needs a Python callable, which a config cannot hold",
    "multiplicativelr": "MultiplicativeLR needs a Python callable, which a config cannot hold",
    "sequentiallr": "SequentialLR needs scheduler objects, which a config cannot hold",
    "chainedscheduler": "ChainedScheduler needs scheduler objects, which a config cannot hold",
}
INTERVALS = ("step", "epoch")
LEGACY_SCHEDULES = ("none", "cosine", "step")


def _classes(module: Any, base: type) -> dict[str, type]:
    return {
        name.lower(): cls
        for name, cls in vars(module).items()
        if isinstance(cls, type)
        and issubclass(cls, base)
        and cls is not base
        and not name.startswith("_")
    }


def optimizer_classes() -> dict[str, type]:
    """Lower-case name -> class of every optimizer in ``torch.optim``."""
    return _classes(torch.optim, torch.optim.Optimizer)


def scheduler_classes() -> dict[str, type]:
    """Lower-case name -> class of every scheduler in ``torch.optim.lr_scheduler``."""
    sched = torch.optim.lr_scheduler
    out = _classes(sched, sched.LRScheduler)
    out["reducelronplateau"] = sched.ReduceLROnPlateau
    return out


def _lookup(kind: str, name: Any, classes: dict[str, type], unusable: Mapping[str, str]) -> type:
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{kind} name must be a string, got {name!r}",
            hint=f'e.g. {kind} = {{name = "{next(iter(classes.values())).__name__}"}}',
        )
    key = name.lower()
    valid = sorted(c.__name__ for k, c in classes.items() if k not in unusable)
    if key in unusable:
        raise ConfigError(
            f"{kind} '{name}' cannot be used here: {unusable[key]}", hint=_hint(valid)
        )
    if key not in classes:
        lower = {v.lower(): v for v in valid}
        close = difflib.get_close_matches(key, list(lower), n=1, cutoff=0.5)
        suggestion = f"; did you mean '{lower[close[0]]}'?" if close else ""
        raise ConfigError(
            f"unknown {kind} '{name}'{suggestion} (valid: {', '.join(valid)})", hint=_hint(valid)
        )
    return classes[key]


def _hint(valid: list[str]) -> str:
    return f"use one of {', '.join(valid[:6])}, … (torch class names, any case)"


def _accepted(cls: type, *, skip: int) -> dict[str, inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1 + skip :]
    return {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _check_kwargs(kind: str, cls: type, kwargs: Mapping[str, Any], *, skip: int) -> None:
    accepted = _accepted(cls, skip=skip)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"{kind} {cls.__name__} takes no argument{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)}{did_you_mean(key, accepted)}",
            hint=f"{cls.__name__} accepts: {', '.join(accepted) or '(nothing)'}",
        )
    for key, value in kwargs.items():
        _check_like_default(kind, cls, key, value, accepted[key].default)


def _check_like_default(kind: str, cls: type, key: str, value: Any, default: Any) -> None:
    """A value unlike torch's default for it: a number given as text, a pair given as three."""
    number = isinstance(default, int | float) and not isinstance(default, bool)
    if number and isinstance(value, str | bool):
        raise ConfigError(
            f"{kind} {cls.__name__}: {key} must be a number, got {value!r}",
            hint=f"e.g. {key} = {default!r} (torch's default)",
        )
    pair = isinstance(default, tuple) and isinstance(value, list | tuple)
    if pair and len(value) != len(default):
        raise ConfigError(
            f"{kind} {cls.__name__}: {key} takes {len(default)} values, got {len(value)} "
            f"({list(value)})",
            hint=f"e.g. {key} = {list(default)} (torch's default)",
        )


def _table(kind: str, spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(
            f"{kind} must be a name or a table with a 'name' key, got {spec!r}",
            hint=f'e.g. {kind} = {{name = "...", ...}}',
        )
    return {str(k).replace("-", "_"): v for k, v in spec.items()}


# ---- optimizers ---------------------------------------------------------------------------
def optimizer_spec(
    optimizer: str | Mapping[str, Any],
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> dict[str, Any]:
    """The normalised optimizer table: ``{"name": <torch class name>, **kwargs}``.

    The top-level ``lr`` and ``weight_decay`` apply to every optimizer that takes them,
    ``momentum`` to SGD only (as before); keys in the table win over them. Adam, AdamW and SGD
    get ``fused=True`` unless the table sets ``fused`` or ``foreach``.
    """
    table = _table("optimizer", optimizer)
    cls = _lookup("optimizer", table.pop("name"), optimizer_classes(), UNUSABLE_OPTIMIZERS)
    accepted = _accepted(cls, skip=1)
    base: dict[str, Any] = {}
    if "lr" in accepted:
        base["lr"] = lr
    if "weight_decay" in accepted:
        base["weight_decay"] = weight_decay
    if cls is torch.optim.SGD:
        base["momentum"] = momentum
    if cls.__name__.lower() in FUSED and "fused" not in table and "foreach" not in table:
        base["fused"] = True
    _check_kwargs("optimizer", cls, table, skip=1)
    return {"name": cls.__name__, **base, **table}


def build_optimizer(spec: str | Mapping[str, Any], params: Iterable[Any]) -> torch.optim.Optimizer:
    """Build the optimizer a (normalised or short) spec names over ``params``.

    Unknown names and keyword arguments raise :class:`ConfigError` (exit 2) naming them.
    """
    table = _table("optimizer", spec)
    cls = _lookup("optimizer", table.pop("name"), optimizer_classes(), UNUSABLE_OPTIMIZERS)
    _check_kwargs("optimizer", cls, table, skip=1)
    params = list(params)
    if table.get("fused") and not _fused_ok(params):
        table["fused"] = False  # e.g. a parameter on a device without fused kernels
    try:
        return cls(params, **table)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"optimizer {cls.__name__}({_kw(table)}): {str(exc).splitlines()[0]}",
            hint=f"check the values; {cls.__name__} accepts {', '.join(_accepted(cls, skip=1))}",
        ) from None


def _fused_ok(params: list[Any]) -> bool:
    supported = ("cpu", "cuda", "mps", "xpu")
    flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    return all(p.device.type in supported and p.is_floating_point() for p in flat)


def _kw(table: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in table.items())


# ---- schedules ----------------------------------------------------------------------------
@dataclass
class Schedule:
    """A scheduler and when the loop steps it: after every optimizer step, or every epoch.

    ``ReduceLROnPlateau`` is stepped each epoch with the held-out loss.
    """

    scheduler: Any
    interval: str = "step"

    @property
    def plateau(self) -> bool:
        """Whether the scheduler is stepped with a metric (ReduceLROnPlateau)."""
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def after_step(self) -> None:
        """Call after every optimizer step."""
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, *, test_loss: float | None = None) -> None:
        """Call after each epoch's evaluation."""
        if self.interval == "epoch":
            if self.plateau:
                self.scheduler.step(test_loss)
            else:
                self.scheduler.step()

    def last_lr(self) -> float:
        """The learning rate of the first parameter group."""
        return float(self.scheduler.get_last_lr()[0])


def schedule_spec(lr_schedule: str | Mapping[str, Any]) -> dict[str, Any] | None:
    """The normalised schedule table (``None`` for no schedule).

    ``"cosine"`` is CosineAnnealingLR to 0 over the run, stepped per step; ``"step"`` halves
    the rate each epoch. Any other name is a ``torch.optim.lr_scheduler`` class (default
    interval: ``step``, ``epoch`` for ReduceLROnPlateau).
    """
    if isinstance(lr_schedule, str) and lr_schedule.lower() in LEGACY_SCHEDULES:
        legacy = {
            "none": None,
            "cosine": {"name": "CosineAnnealingLR", "interval": "step"},
            "step": {"name": "StepLR", "interval": "step", "gamma": 0.5},
        }
        return legacy[lr_schedule.lower()]
    table = _table("lr_schedule", lr_schedule)
    cls = _lookup("lr_schedule", table.pop("name"), scheduler_classes(), UNUSABLE_SCHEDULERS)
    plateau = cls is torch.optim.lr_scheduler.ReduceLROnPlateau
    interval = table.pop("interval", "epoch" if plateau else "step")
    warmup = table.pop("warmup_steps", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(
            f"lr_schedule warmup_steps must be an integer >= 0, got {warmup!r}",
            hint="e.g. warmup_steps = 100 (a linear ramp from lr/warmup_steps)",
        )
    if warmup and (plateau or interval != "step"):
        raise ConfigError(
            "lr_schedule warmup_steps needs a schedule stepped per step",
            hint='drop warmup_steps, or use interval = "step"',
        )
    if interval not in INTERVALS:
        raise ConfigError(
            f"lr_schedule interval '{interval}'{did_you_mean(str(interval), INTERVALS)} "
            f"(valid: {', '.join(INTERVALS)})",
            hint='interval = "step" (after every optimizer step) or "epoch"',
        )
    if plateau and interval != "epoch":
        raise ConfigError(
            "ReduceLROnPlateau is stepped with the held-out loss, once per epoch",
            hint='set interval = "epoch" (or leave it out)',
        )
    _check_kwargs("lr_schedule", cls, table, skip=1)
    return {
        "name": cls.__name__,
        "interval": interval,
        **({"warmup_steps": warmup} if warmup else {}),
        **table,
    }


def build_scheduler(
    spec: str | Mapping[str, Any] | None,
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    epochs: int,
    max_steps: int = 0,
) -> Schedule | None:
    """Build the schedule a spec names (``None``: constant rate).

    Arguments a scheduler requires and the run determines are filled in when the table leaves
    them out: ``T_max`` (CosineAnnealingLR) and ``total_steps`` (OneCycleLR) are the run's
    length in the table's interval, ``step_size`` (StepLR) is one epoch, ``max_lr``
    (OneCycleLR) is the optimizer's rate.
    """
    table = schedule_spec(spec) if spec is not None else None
    if table is None:
        return None
    table = dict(table)
    cls = _lookup("lr_schedule", table.pop("name"), scheduler_classes(), UNUSABLE_SCHEDULERS)
    interval = table.pop("interval", "step")
    warmup = table.pop("warmup_steps", 0)
    total_steps = steps_per_epoch * epochs
    if max_steps:
        total_steps = min(total_steps, max_steps)
    length = total_steps if interval == "step" else max(1, -(-total_steps // steps_per_epoch))
    length = max(1, length - warmup)  # the schedule proper starts after the warm-up
    sched = torch.optim.lr_scheduler
    if cls is sched.StepLR:
        table.setdefault("step_size", steps_per_epoch if interval == "step" else 1)
    if cls is sched.CosineAnnealingLR:
        table.setdefault("T_max", length)
    if cls is sched.OneCycleLR:
        if not {"total_steps", "epochs", "steps_per_epoch"} & set(table):
            table["total_steps"] = length
        table.setdefault("max_lr", optimizer.param_groups[0]["lr"])
    try:
        main = cls(optimizer, **table)
        if not warmup:
            return Schedule(main, interval)
        ramp = sched.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
        return Schedule(sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup]), interval)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"lr_schedule {cls.__name__}({_kw(table)}): {str(exc).splitlines()[0]}",
            hint=f"{cls.__name__} accepts {', '.join(_accepted(cls, skip=1))}",
        ) from None


# ---- gradients ----------------------------------------------------------------------------
def clip_gradients(params: Iterable[torch.Tensor], max_norm: float) -> None:
    """Scale gradients so their global L2 norm is at most ``max_norm`` (0: no clipping)."""
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
