"""The training loss, by name from the config.

``loss = "cross_entropy"`` (the default; logits in), ``loss = {name = "cross_entropy",
label_smoothing = 0.1}``, ``loss = "nll"`` (for models that end in ``log_softmax``), or a
user callable ``loss = "my_pkg.losses:focal"`` (``fn(output, target) -> scalar mean loss``;
a table passes its other keys as keyword arguments).

Every loss the loop calls takes ``reduction="mean" | "sum"``: the distributed step needs the
sum over a rank's share of the batch (see :mod:`modelkit.training.loop`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from modelkit.errors import BadInputError, ConfigError, did_you_mean
from modelkit.models.imports import import_object
from modelkit.usercode import call_user

LossFn = Callable[..., torch.Tensor]


def _cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    if not isinstance(label_smoothing, int | float) or not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(
            f"loss cross_entropy: label_smoothing must be a number in [0, 1), got {label_smoothing!r}",
            hint="e.g. label_smoothing = 0.1",
        )
    return functools.partial(F.cross_entropy, label_smoothing=float(label_smoothing))


def _nll() -> LossFn:
    return F.nll_loss


BUILTIN_LOSSES: dict[str, Callable[..., LossFn]] = {
    "cross_entropy": _cross_entropy,
    "nll": _nll,
}
DESCRIPTIONS = {
    "cross_entropy": "softmax cross-entropy on logits (label_smoothing = 0..1)",
    "nll": "negative log-likelihood on log-probabilities (models ending in log_softmax)",
}


def loss_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """The normalised loss table ``{"name": ..., **kwargs}`` (checked, not built)."""
    if isinstance(spec, str):
        table: dict[str, Any] = {"name": spec}
    elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        table = {str(k).replace("-", "_"): v for k, v in spec.items()}
    else:
        raise ConfigError(
            f"loss must be a name or a table with a 'name' key, got {spec!r}",
            hint='e.g. loss = "nll" or loss = {name = "cross_entropy", label_smoothing = 0.1}',
        )
    name = table["name"].replace("-", "_")
    if ":" not in name:
        name = name.lower()
        if name not in BUILTIN_LOSSES:
            valid = sorted(BUILTIN_LOSSES)
            raise ConfigError(
                f"unknown loss '{table['name']}'{did_you_mean(name, valid)} "
                f"(valid: {', '.join(valid)}, or package.module:function)",
                hint='e.g. loss = "cross_entropy"',
            )
        _check_kwargs(name, BUILTIN_LOSSES[name], {k: v for k, v in table.items() if k != "name"})
    return {**table, "name": name}


def _check_kwargs(name: str, factory: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"loss {name} takes no argument {unknown[0]!r}{did_you_mean(unknown[0], accepted)}",
            hint=f"{name} accepts: {', '.join(accepted) or '(nothing)'}",
        )


def build_loss(spec: str | Mapping[str, Any]) -> LossFn:
    """The loss function a spec names: ``fn(output, target, reduction="mean") -> Tensor``."""
    table = loss_spec(spec)
    name = table.pop("name")
    if ":" not in name:
        return BUILTIN_LOSSES[name](**table)

    fn = import_object(name, what="loss")
    if isinstance(fn, type):  # torch.nn:CrossEntropyLoss: a loss module class, built with the table
        if not issubclass(fn, torch.nn.Module):
            raise BadInputError(
                f"loss '{name}' is a class, not a loss function or module",
                hint="name a function fn(output, target) or an nn.Module loss class",
            )
        fn, table = call_user("loss", name, fn, **table), {}
    user = functools.partial(fn, **table) if table else fn
    try:
        inspect.signature(user).bind(None, None)
    except TypeError as exc:
        raise BadInputError(
            f"loss '{name}' cannot be called as fn(output, target): {exc}",
            hint="define it as def fn(output, target, **options) -> scalar tensor",
        ) from None
    return _UserLoss(user, name)


class _UserLoss:
    """A user callable returning the batch-mean loss, given ``reduction`` like torch's losses."""

    def __init__(self, fn: Callable[..., torch.Tensor], name: str) -> None:
        self.fn = fn
        self.name = name

    def __call__(
        self, output: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean"
    ) -> torch.Tensor:
        loss = call_user("loss", self.name, self.fn, output, target)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = list(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise BadInputError(
                f"loss {self.name} returned {shape}, not a scalar tensor",
                hint="return the batch mean, e.g. losses.mean()",
            )
        return loss * len(target) if reduction == "sum" else loss
