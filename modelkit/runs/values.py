"""Values a user hands to a run, checked at the door: steps, metrics, modules, configs.

Each check raises :class:`~modelkit.errors.InvalidArgument` (exit 2, one ``error:``/``hint:``
pair) naming the argument, instead of a traceback from deep inside a write.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from typing import Any

from modelkit.errors import BadInputError, InvalidArgument
from modelkit.models.reference import ModelReference, _provider, reference_for_model
from modelkit.runs.documents import read_model_reference
from modelkit.runs.perturb import unwrap
from modelkit.runs.seeding import checked_seed
from modelkit.tasks import get_task

RESERVED = ("kind", "sha256", "nonfinite")  # metrics.jsonl fields a metric may not take


def checked_step(step: Any, *, name: str = "step") -> int:
    """``step`` as an int >= 0 (numpy/torch integers too)."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or int(step) < 0:
        integral_tensor = hasattr(step, "numel") and not step.is_floating_point()
        if integral_tensor and step.numel() == 1 and int(step.item()) >= 0:
            return int(step.item())
        raise InvalidArgument(name, step, "an integer >= 0", hint=f"pass the {name} number")
    return int(step)


def checked_int(value: Any, *, name: str, minimum: int = 0, hint: str | None = None) -> int:
    """``value`` as an int >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(
            name, value, f"an integer >= {minimum}", hint=hint or f"pass {name}={minimum}"
        )
    return value


def checked_module(model: Any, *, name: str = "model", hint: str | None = None) -> Any:
    """``model`` when it is a ``torch.nn.Module`` (wrappers included)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise InvalidArgument(
            name,
            model,
            "a torch.nn.Module",
            hint=hint or f"pass the model being trained: {name}=model",
        )
    return model


def scalar(name: str, value: Any) -> Any:
    """A metric value as a plain Python value: a 0-d tensor or numpy scalar becomes its item."""
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    if callable(numel):
        numel = numel()
    if hasattr(value, "item") and callable(value.item):
        if isinstance(numel, int) and numel != 1:
            shape = tuple(getattr(value, "shape", ()))
            raise InvalidArgument(
                name,
                f"<{type(value).__name__} of shape {shape}>",
                "a number (a Python number or a one-element tensor)",
                hint=f"log {name}={name}.item(), or {name}={name}.mean().item()",
            )
        return value.item()
    return value


def checked_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as JSON-able values (NaN/inf allowed: they are encoded when written)."""
    out = {}
    for key, value in metrics.items():
        if key in RESERVED:
            raise InvalidArgument(
                "metric name",
                key,
                f"not one of {', '.join(RESERVED)} (reserved)",
                hint="log it under another name",
            )
        out[key] = scalar(key, value)
    try:
        json.dumps(out)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            "metrics", out, "numbers or strings", hint=f"log loss=loss.item() ({exc})"
        ) from None
    return out


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict from a dict, an argparse Namespace or a dataclass instance."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    elif not isinstance(config, dict) and hasattr(config, "__dict__"):
        config = vars(config)
    if not isinstance(config, dict):
        raise BadInputError(
            f"config must be a dict, an argparse Namespace or a dataclass, "
            f"got {type(config).__name__}",
            hint="pass config=vars(args)",
        )
    try:
        return json.loads(json.dumps(config, sort_keys=True, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"config cannot be stored as JSON: {exc}",
            hint="pass numbers, strings, lists and dicts (paths are stored as strings)",
        ) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-able")


def task_fields(task: str | None, eval_transform: Any) -> dict[str, Any]:
    """run.json's ``task`` (checked against the registry) and ``eval_transform`` reference."""
    out: dict[str, Any] = {}
    if task is not None:
        out["task"] = get_task(task).name
    if eval_transform is not None:
        ref = eval_transform
        if callable(eval_transform):
            module = getattr(eval_transform, "__module__", None)
            name = getattr(eval_transform, "__qualname__", "")
            if not module or module == "__main__" or "<" in name:
                raise BadInputError(
                    f"eval_transform {eval_transform!r} cannot be imported again",
                    hint="define it at the top level of an importable module, "
                    "or pass 'package.module:function'",
                )
            ref = f"{module}:{name}"
        if not isinstance(ref, str) or not (":" in ref or ref.startswith("model.")):
            raise BadInputError(
                f"eval_transform must be a function, 'package.module:function' or "
                f"'model.ATTR' (the model's own), got {ref!r}",
                hint="e.g. eval_transform='my_pkg.data:normalize' or 'model.normalize'",
            )
        out["eval_transform"] = ref
    return out


def resolve_reference(reference: Any, model: Any, model_kwargs: dict[str, Any] | None) -> Any:
    """The :class:`ModelReference` to record: given, or taken from the model instance."""

    model = unwrap(model) if model is not None else None
    if reference is None:
        return reference_for_model(model, kwargs=model_kwargs) if model is not None else None
    if isinstance(reference, ModelReference):
        return reference
    if isinstance(reference, str):
        return ModelReference(
            ref=reference, kwargs=dict(model_kwargs or {}), **_provider(reference)
        )
    if isinstance(reference, dict):
        return read_model_reference(reference, source="start_run(reference=...)")
    raise BadInputError(
        f"reference must be 'module:attr', a dict or a ModelReference, got {type(reference).__name__}",
        hint="pass reference='my_pkg.models:Net' with model_kwargs={...}",
    )


def check_start_args(
    path: Any, model: Any, seed: Any, every: Any, name: Any, overwrite: Any, resume: Any
) -> None:
    """``start_run``'s arguments, each of the right type and range."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InvalidArgument("path", path, "a directory path", hint="start_run('runs/exp', ...)")
    if model is not None:
        checked_module(model)
    if seed is not None:
        checked_seed(seed)
    checked_int(every, name="fingerprint_every", hint="25 (the default) or 0 for none")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidArgument("name", name, "a non-empty string", hint="name='my-model'")
    for key, value in (("overwrite", overwrite), ("resume", resume)):
        if not isinstance(value, bool):
            raise InvalidArgument(key, value, "True or False", hint=f"pass {key}=True")


def loss_value(loss: Any, step: int) -> float | None:
    """A logged loss as a float (None when not logged)."""
    if loss is None:
        return None
    try:
        return float(loss)
    except (TypeError, ValueError):
        raise BadInputError(
            f"loss must be a number, got {loss!r} at step {step}", hint="log loss=loss.item()"
        ) from None
