"""The importable reference that rebuilds a model anywhere: ``module:attr`` + kwargs + package.

Every run's and every release's ``config.json`` carries one (``modelkit.reference``), so a
model can be loaded outside the repository that trained it: all it needs is the package that
provides ``module`` (named, with its version, in the reference).

::

    ref = reference_for_name("mnist-mlp", kwargs={"num_classes": 10})
    ref.to_dict()  # {"ref": "modelkit.models.mlp:mnist_mlp", "kwargs": {...},
                   #  "package": "modelkit", "version": "0.1.0"}
    model = ref.build()

Importing this module does not import torch.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelkit.errors import BadInputError, ModelNotImportable, NotImportable
from modelkit.models.configs import RecordedConfig, decode_config, encode_config
from modelkit.models.imports import _qualified, import_object
from modelkit.models.registry import resolve_model

HF_ARCHITECTURES = "architectures"  # a key of transformers' config.json (the model classes)


@dataclass(frozen=True)
class ModelReference:
    """What rebuilds a model: an importable callable, its kwargs, and who provides it."""

    ref: str  # "importable.module:attr" (a factory function or an nn.Module class)
    kwargs: dict[str, Any] = field(default_factory=dict)
    package: str | None = None  # the distribution that provides the module
    version: str | None = None  # that distribution's version
    # arguments that are config objects: name -> its class, kind and values (models/configs.py)
    configs: dict[str, RecordedConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:  # kwargs as JSON will hold them (tuples become lists)

        plain, configs = {}, dict(self.configs)
        for key, value in self.kwargs.items():
            if _is_json(value):
                plain[key] = value
            else:  # a config object: its values + class (NotRecordable when it is none)
                configs[key] = encode_config(value, reference=self.ref, argument=key)
        object.__setattr__(self, "kwargs", _jsonable(plain, what=f"kwargs of {self.ref}"))
        object.__setattr__(self, "configs", configs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``modelkit.reference`` table of config.json)."""
        out = {
            "ref": self.ref,
            "kwargs": dict(self.kwargs),
            "package": self.package,
            "version": self.version,
        }
        if self.configs:
            out["configs"] = {k: v.to_dict() for k, v in self.configs.items()}
        return out

    def transformers_config(self) -> dict[str, Any] | None:
        """The values of a transformers config argument (what its config.json holds), or None."""
        for entry in self.configs.values():
            if entry.kind == "transformers":
                return dict(entry.values or {})
        return None

    def build(self) -> Any:
        """Import ``ref`` and call it with ``kwargs``; the result must be an ``nn.Module``."""
        import torch

        try:
            factory = import_object(self.ref, what="model")
        except NotImportable as exc:
            provider = f"{self.package} {self.version or ''}".strip() if self.package else None
            own_hint = exc.hint if exc.hint != exc.describe()[1] else None  # e.g. a refusal's
            raise ModelNotImportable(
                self.ref,
                exc.cause,
                package=provider,
                hint=own_hint
                or (f"pip install '{self.package}=={self.version}'" if self.package else None),
            ) from None

        configs = {
            k: decode_config(v, source=f"config argument '{k}' of {self.ref}")
            for k, v in self.configs.items()
        }
        try:
            module = factory(**self.kwargs, **configs)
        except TypeError as exc:
            raise BadInputError(
                f"{self.ref} rejected its arguments {sorted(self.kwargs)}: {exc}",
                hint="the installed package differs from the one that made these weights",
            ) from None
        if not isinstance(module, torch.nn.Module):
            raise BadInputError(
                f"{self.ref} returned {type(module).__name__}, not a torch.nn.Module",
                hint="the reference must name a model class or a factory returning one",
            )
        return module


def reference_for_name(
    name: str, *, project: Any = None, kwargs: dict[str, Any] | None = None
) -> ModelReference:
    """The reference for a model given as a registry name, a project alias or ``pkg.mod:f``."""

    entry = resolve_model(name, project=project)
    spec = getattr(entry.factory, "__modelkit_spec__", None)  # a project alias
    if spec is None and ":" in name:
        spec = name
    if spec is None:
        spec = _qualified(entry.factory)
    return ModelReference(ref=spec, kwargs=dict(kwargs or {}), **_provider(spec))


def reference_for_model(model: Any, *, kwargs: dict[str, Any] | None = None) -> ModelReference:
    """The reference that rebuilds ``model``'s class, for a model built by the user's own code.

    ``kwargs`` come from the argument, else the ``PyTorchModelHubMixin`` config, else the
    ``__init__`` signature (every parameter stored on the instance under its own name, or
    left at its default).
    """
    cls = type(model)
    spec = _qualified(cls)
    if kwargs is None:
        kwargs = _instance_kwargs(model)
    ref = ModelReference(ref=spec, kwargs=dict(kwargs), **_provider(spec))
    for entry in ref.configs.values():  # what save_pretrained writes: AutoModel finds the class
        values = entry.values if entry.kind == "transformers" else None
        if values is not None and not values.get(HF_ARCHITECTURES):
            values[HF_ARCHITECTURES] = [cls.__name__]
    return ref


def _instance_kwargs(model: Any) -> dict[str, Any]:
    mixin_config = getattr(model, "_hub_mixin_config", None)
    if isinstance(mixin_config, dict):
        return dict(mixin_config)
    stored = dict(vars(model))
    hparams = getattr(model, "hparams", None)  # Lightning's save_hyperparameters()
    if isinstance(hparams, Mapping):
        stored = {**dict(hparams), **stored}
    try:
        params = list(inspect.signature(type(model).__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    out: dict[str, Any] = {}
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if p.name in stored:
            out[p.name] = stored[p.name]
        elif p.default is not inspect.Parameter.empty:
            out[p.name] = p.default
        else:
            raise BadInputError(
                f"cannot tell how {type(model).__name__} was built: its __init__ argument "
                f"'{p.name}' is not stored on the instance",
                hint="pass model_kwargs={...} (the arguments the model was built with)",
            )
    return out


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    try:
        return dict(importlib.metadata.packages_distributions())
    except Exception:  # a broken environment must not stop a run from being recorded
        return {}


def _provider(spec: str) -> dict[str, str | None]:
    """The installed distribution (name, version) that provides ``spec``'s top-level package."""
    top = spec.partition(":")[0].split(".")[0]
    try:  # fast path: a distribution named like its package (packages_distributions takes ~1 s)
        return {"package": top, "version": importlib.metadata.version(top)}
    except (importlib.metadata.PackageNotFoundError, ValueError):
        pass
    names = _packages_distributions().get(top) or []
    for dist in names:
        try:
            return {"package": dist, "version": importlib.metadata.version(dist)}
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"package": None, "version": None}


def _jsonable(value: dict[str, Any], *, what: str) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"{what} cannot be stored as JSON: {exc}",
            hint="pass model_kwargs made of numbers, strings, lists and tables",
        ) from None


def _is_json(value: Any) -> bool:
    """Plain JSON data: numbers, strings, None, lists/tuples and dicts (subclasses too) of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False
