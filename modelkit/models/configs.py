"""Config objects a model is built from, recorded as JSON plus their class and rebuilt.

A model built as ``GPT2LMHeadModel(GPT2Config(...))``, ``GPT(GPTConfig(...))`` (a
``@dataclass``), ``Net(cfg)`` with a pydantic model or an ``argparse.Namespace`` cannot store
its argument as JSON. :func:`encode_config` turns such an argument into::

    {"class": "transformers.models.gpt2.configuration_gpt2:GPT2Config",
     "kind": "transformers", "values": {...}}

(``to_dict()`` / ``dataclasses.asdict`` / ``model_dump(mode="json")`` / ``vars``) and
:func:`decode_config` rebuilds it (``from_dict`` / ``Cls(**values)`` / ``model_validate`` /
``Namespace(**values)``). Plain dicts are JSON already and need none of this.

Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from modelkit.errors import BadInputError, NotRecordable
from modelkit.models.imports import _qualified, import_object

__all__ = [
    "KINDS",
    "RecordedConfig",
    "config_expression",
    "decode_config",
    "encode_config",
    "kind_of",
]

KINDS = ("transformers", "dataclass", "pydantic", "namespace")
_HF_BASES = ("PretrainedConfig", "PreTrainedConfig")


@dataclass(frozen=True)
class RecordedConfig:
    """A config object as recorded: its class (``module:attr``), its kind (one of
    :data:`KINDS`) and its values (read from a record by ``modelkit.runs.parts``)."""

    klass: str | None = field(default=None, metadata={"key": "class"})
    kind: str | None = None
    values: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """``{"class", "kind", "values"}`` as recorded."""
        return {"class": self.klass, "kind": self.kind, "values": self.values}


def kind_of(value: Any) -> str | None:
    """Which kind of config object ``value`` is (one of :data:`KINDS`), None for any other."""
    cls = type(value)
    for base in cls.__mro__:
        if base.__name__ in _HF_BASES and base.__module__.startswith("transformers"):
            return "transformers"
        if base.__name__ == "BaseModel" and base.__module__.startswith("pydantic"):
            return "pydantic"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return "dataclass"
    if cls.__name__ == "Namespace" and cls.__module__ == "argparse":
        return "namespace"
    return None


def encode_config(value: Any, *, reference: str, argument: str) -> RecordedConfig:
    """The class, kind and values of a config object passed as ``argument`` of the model
    ``reference``; :class:`NotRecordable` when ``value`` is no config object or holds values
    JSON cannot store."""

    kind = kind_of(value)
    if kind is None:
        raise NotRecordable(reference, argument, type(value).__name__)
    if kind == "transformers":
        values = value.to_dict()
    elif kind == "pydantic":
        values = value.model_dump(mode="json")
    elif kind == "dataclass":
        _check_flat_dataclass(value, reference=reference, argument=argument)
        values = dataclasses.asdict(value)
    else:
        values = dict(vars(value))
    try:
        values = json.loads(json.dumps(values, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise NotRecordable(reference, argument, type(value).__name__, cause=str(exc)) from None
    cls = "argparse:Namespace" if kind == "namespace" else _qualified(type(value))
    return RecordedConfig(klass=cls, kind=kind, values=values)


def _check_flat_dataclass(value: Any, *, reference: str, argument: str) -> None:
    """A field holding a dataclass would come back as a dict: refuse it at record time."""
    for f in dataclasses.fields(value):
        inner = getattr(value, f.name)
        if dataclasses.is_dataclass(inner) and not isinstance(inner, type):
            raise NotRecordable(
                reference,
                argument,
                type(value).__name__,
                cause=f"its field '{f.name}' holds a {type(inner).__name__} dataclass, "
                "which would be rebuilt as a dict",
            )


def decode_config(entry: RecordedConfig, *, source: str) -> Any:
    """The config object ``entry`` (from :func:`encode_config`) describes, rebuilt."""

    kind, cls_ref, values = entry.kind, entry.klass, entry.values
    if kind not in KINDS or not isinstance(cls_ref, str) or not isinstance(values, dict):
        raise BadInputError(
            f"{source}: a recorded config must have kind (one of {', '.join(KINDS)}), "
            f"class and values, got {sorted(entry.raw or entry.to_dict())}",
            hint="the file is corrupt or was edited by hand",
        )
    cls = import_object(cls_ref, what="model config")
    if kind == "transformers":
        return cls.from_dict(dict(values))
    if kind == "pydantic":
        return cls.model_validate(values)
    return cls(**values)


def config_expression(entry: RecordedConfig) -> tuple[str, str]:
    """``(import line, Python expression)`` that rebuild the config in a card's snippet."""
    module, _, attr = (entry.klass or "").partition(":")
    literal = repr(json.loads(json.dumps(entry.values, sort_keys=True)))
    top = attr.split(".")[0]
    call = {"transformers": "from_dict", "pydantic": "model_validate"}.get(entry.kind or "")
    expr = f"{attr}.{call}({literal})" if call else f"{attr}(**{literal})"
    return f"from {module} import {top}", expr
