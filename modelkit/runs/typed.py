"""One way to read a JSON record into a frozen dataclass: the dataclass's annotations are the
schema (strict, through :mod:`modelkit.validation`), nested dataclasses are read recursively,
unknown keys are kept out of the typed fields (writers keep them in ``raw``).

This is the only place a record's string keys are turned into attributes; every record type in
modelkit (run.json and its parts, config.json, eval files, release records, repro and benchmark
outcomes) is a dataclass read by :func:`read_typed`.

A field whose JSON key is not a Python name says so in its metadata:
``klass: str | None = field(default=None, metadata={"key": "class"})``; a field computed by
the record's own reader (not a key of the document) says ``metadata={"derived": True}``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, TypeVar

from modelkit.errors import RunDirError
from modelkit.validation import describe, validation_error

T = TypeVar("T")


def key_of(f: dataclasses.Field[Any]) -> str:
    """The JSON key of a dataclass field (its name unless its metadata names another)."""
    return str(f.metadata.get("key", f.name))


def _holds_record(tp: Any) -> bool:
    """Whether an annotation is, or contains, a dataclass (``R``, ``R | None``,
    ``dict[str, R]``, ``tuple[R, ...]``, ``list[dict[str, R]]`` ...)."""
    return dataclasses.is_dataclass(tp) or any(_holds_record(a) for a in typing.get_args(tp))


@functools.cache
def _plan(cls: type) -> tuple[tuple[str, str, Any, bool, bool], ...]:
    """(attribute, JSON key, annotation, holds records, nullable) per field."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        if f.name == "raw" or not f.init or f.metadata.get("derived"):
            continue
        tp = hints[f.name]
        union = typing.get_origin(tp) in (typing.Union, types.UnionType)
        nullable = union and type(None) in typing.get_args(tp)
        out.append((f.name, key_of(f), tp, _holds_record(tp), nullable))
    return tuple(out)


def read_typed(
    cls: type[T],
    data: Any,
    *,
    source: str,
    error: type[Exception] = RunDirError,
    where: str = "",
    keep_raw: bool = True,
) -> T:
    """``data`` (a parsed JSON object) as ``cls``; a value of the wrong type raises ``error``
    naming ``source`` and the dotted key (``run.json: field 'git.dirty' must be ...``).
    Fields holding records (``R``, ``dict[str, R]``, ``tuple[R, ...]``) are read item by item."""
    if not isinstance(data, dict):
        what = f"field '{where}'" if where else "the document"
        raise error(
            f"{source}: {what} must be an object, got {type(data).__name__}",
            hint="the file is corrupt or was edited by hand",
        )
    values: dict[str, Any] = {}
    for name, key, tp, holds, nullable in _plan(cls):
        if key not in data:
            continue
        value, dotted = data[key], f"{where}.{key}" if where else key
        if value is None and not nullable:
            expected = "an object" if dataclasses.is_dataclass(tp) else describe(tp)
            raise error(
                f"{source}: field '{dotted}' is null, expected {expected}",
                hint="the file is corrupt or was edited by hand",
            )
        read = _read_value if holds else _checked
        values[name] = read(tp, value, source=source, error=error, where=dotted)
    if keep_raw and any(f.name == "raw" for f in dataclasses.fields(cls)):
        values["raw"] = dict(data)
    return cls(**values)


def _read_value(tp: Any, value: Any, *, source: str, error: type[Exception], where: str) -> Any:
    """A value whose annotation holds records, read item by item."""
    args, origin = typing.get_args(tp), typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _read_value(inner[0], value, source=source, error=error, where=where)
    if dataclasses.is_dataclass(tp):
        return read_typed(tp, value, source=source, error=error, where=where)  # type: ignore[arg-type]
    if origin is dict and isinstance(value, dict):
        return {
            str(k): _read_value(args[1], v, source=source, error=error, where=f"{where}.{k}")
            for k, v in value.items()
        }
    if origin in (tuple, list) and isinstance(value, list):
        items = [
            _read_value(args[0], v, source=source, error=error, where=f"{where}[{i}]")
            for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple else items
    if origin not in (dict, tuple, list):
        return _checked(tp, value, source=source, error=error, where=where)
    expected = "an object" if origin is dict else "a list"
    raise error(
        f"{source}: field '{where}' must be {expected}, got {type(value).__name__}",
        hint="the file is corrupt or was edited by hand",
    )


def _checked(tp: Any, value: Any, *, source: str, error: type[Exception], where: str) -> Any:
    """``value`` if it fits the annotation ``tp``, else ``error`` naming the field."""
    if validation_error(tp, value) is not None:
        raise error(
            f"{source}: field '{where}' must be {describe(tp)}, "
            f"got {type(value).__name__} {json.dumps(value, default=str)[:40]}",
            hint="the file is corrupt or was edited by hand",
        )
    return value


def to_plain(obj: Any) -> Any:
    """A typed record back as JSON-ready data (``raw`` first, typed fields laid over it)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        if isinstance(obj, (list, tuple)):
            return [to_plain(v) for v in obj]
        if isinstance(obj, dict):
            return {k: to_plain(v) for k, v in obj.items()}
        return obj
    out: dict[str, Any] = dict(getattr(obj, "raw", None) or {})
    for f in dataclasses.fields(obj):
        if f.name == "raw" or f.metadata.get("derived"):
            continue
        value = to_plain(getattr(obj, f.name))
        if key_of(f) in out or value not in (None, {}, []):
            out[key_of(f)] = value
    return out
