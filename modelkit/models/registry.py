"""Model registry: built-in models register with ``@register_model`` (timm style);
a project adds its own in ``[tool.modelkit.models]``; any ``package.module:factory`` works too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelkit.errors import BadInputError, ModelkitError, UserCodeError, unknown
from modelkit.models.imports import import_object

_REGISTRY: dict[str, ModelEntry] = {}


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its name, factory and what it expects."""

    name: str
    factory: Callable[..., Any]
    description: str = ""
    input_shape: tuple[int, ...] | None = None
    default_data: str | None = None
    source: str = "builtin"
    defaults: dict[str, Any] | None = None  # recommended training hyperparameters
    task: str | None = None  # modelkit.tasks name (None: the data's task decides)


def register_model(
    name: str,
    *,
    description: str = "",
    input_shape: tuple[int, ...] | None = None,
    default_data: str | None = None,
    defaults: dict[str, Any] | None = None,
    task: str = "classification",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``factory`` under ``name`` (``defaults``: its recommended
    hyperparameters; ``task``: what it does, a :mod:`modelkit.tasks` name)."""

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' registered twice")
        _REGISTRY[name] = ModelEntry(
            name,
            factory,
            description,
            input_shape,
            default_data,
            defaults=defaults or {},
            task=task,
        )
        return factory

    return wrap


def builtin_models() -> dict[str, ModelEntry]:
    """The built-in registry (importing the reference model modules)."""
    import modelkit.models.cnn  # noqa: F401  (registers)
    import modelkit.models.gpt  # noqa: F401
    import modelkit.models.mlp  # noqa: F401

    return dict(_REGISTRY)


def list_models(project: Any = None) -> dict[str, ModelEntry]:
    """Built-in models plus the project's ``[tool.modelkit.models]``."""
    entries = builtin_models()
    for name, spec in (getattr(project, "models", None) or {}).items():
        entries[name] = ModelEntry(name, _lazy(spec), description=spec, source="pyproject")
    return entries


def _lazy(spec: str) -> Callable[..., Any]:
    def factory(**kwargs: Any) -> Any:
        return import_object(spec, what="model")(**kwargs)

    factory.__modelkit_spec__ = spec  # type: ignore[attr-defined]
    return factory


def resolve_model(name: str, *, project: Any = None) -> ModelEntry:
    """Find a model by registry name, project name or ``package.module:factory``."""
    if ":" in name:
        return ModelEntry(name, import_object(name, what="model"), description=name, source=name)
    entries = list_models(project)
    if name not in entries:
        raise unknown("model", name, entries, hint="see `modelkit models`, or pass pkg.mod:factory")
    return entries[name]


def factory_parameters(entry: ModelEntry) -> set[str] | None:
    """Keyword names the factory accepts (None when it takes ``**kwargs`` we cannot see)."""
    try:
        params = inspect.signature(signature_target(entry)).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def signature_target(entry: ModelEntry, *, follow_alias: bool = True) -> Callable[..., Any]:
    """What the entry's parameters are read from: its factory, or, for a factory that only
    forwards ``**kwargs`` (``def mnist_mlp(**kwargs) -> MnistMLP``), the class its return
    annotation names. Derived from the entry itself: no second table of classes."""
    import typing

    target = entry.factory
    spec = getattr(target, "__modelkit_spec__", None)
    if spec is not None and follow_alias:  # a project alias: the object it names
        target = import_object(spec, what="model")
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return target
    if [p.kind for p in params] != [inspect.Parameter.VAR_KEYWORD]:
        return target
    try:
        returned = typing.get_type_hints(target).get("return")
    except Exception:  # an annotation that does not resolve: read the factory as it is
        return target
    return returned if isinstance(returned, type) else target


def build_model(
    name: str,
    *,
    project: Any = None,
    kwargs: dict[str, Any] | None = None,
    data_hints: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Build a model; returns ``(module, resolved_kwargs)``.

    ``data_hints`` (num_classes, in_channels, image_size) fill parameters the factory accepts
    and the user did not set, so a model fits its data without hand-editing.
    """
    import torch

    entry = resolve_model(name, project=project)
    accepted = factory_parameters(entry)
    resolved = dict(kwargs or {})
    for key, value in (data_hints or {}).items():
        if key not in resolved and accepted is not None and key in accepted:
            resolved[key] = value
    resolved.update(
        {k: v for k, v in _signature_defaults(entry).items() if k not in resolved}
    )  # explicit in config.json, so a later change of a default cannot break old weights
    try:
        module = entry.factory(**resolved)
    except TypeError as exc:
        raise BadInputError(
            f"model '{name}' rejected its arguments {sorted(resolved)}: {exc}",
            hint="check model_kwargs against the factory's signature",
        ) from None
    except ModelkitError:
        raise
    except Exception as exc:  # the factory's own code failed: name it
        raise UserCodeError("model factory", name, exc) from exc
    if not isinstance(module, torch.nn.Module):
        raise BadInputError(
            f"model factory '{name}' returned {type(module).__name__}, not a torch.nn.Module",
            hint="the factory must return an nn.Module",
        )
    return module, resolved


def _signature_defaults(entry: ModelEntry) -> dict[str, Any]:
    """JSON-able default values of the factory's (or built-in class's) keyword parameters."""
    import json

    try:
        target = signature_target(entry, follow_alias=False)
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return {}
    out = {}
    for p in params:
        if p.default is inspect.Parameter.empty or p.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        try:
            out[p.name] = json.loads(json.dumps(p.default))
        except (TypeError, ValueError):
            continue
    return out
