"""One validation layer for everything read from a file: types and ranges from annotations.

A dataclass's field annotations *are* its schema. :func:`validate_fields` checks a mapping of
values against them with pydantic in strict mode (imported lazily, only when something is
validated, so ``modelkit --help`` stays fast), so a new annotated field is validated without
any further code:

- ``int`` refuses ``1.5``, ``true`` and ``"3"``; ``bool`` refuses ``1``; ``str`` refuses ``1``;
- ``float`` takes an integer but refuses NaN and +-inf (a non-finite hyperparameter is never
  meant);
- ``dict[str, Any]`` / ``str | dict[str, Any]`` / ``list[float]`` check the nested types;
- ranges come from ``Annotated`` metadata, e.g. ``epochs: Annotated[int, Ge(1)] = 10`` with
  :class:`annotated_types.Ge` (re-exported here as :data:`Ge`, :data:`Gt`, ...), or the
  ``Field(ge=1)`` of pydantic.

Every failure is a :class:`~modelkit.errors.ConfigError` (exit 2) that names the file and the
key: ``config.toml: key 'epochs' must be an integer (got 1.5)``,
``config.toml: key 'seed' must be an integer >= 0 and <= 4294967295 (got -1)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from typing_extensions import TypedDict

from modelkit.errors import ConfigError
from modelkit.readers import loads_json

__all__ = [
    "Ge",
    "Gt",
    "Le",
    "Lt",
    "check_finite",
    "check_safetensors_header",
    "describe",
    "read_json_file",
    "validate_document",
    "validate_fields",
    "validate_value",
    "validation_error",
]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache
def _adapter(tp: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    # strict: no coercion ("3" -> 3, 1.0 -> 1, 1 -> True); finite floats only
    config = ConfigDict(strict=True, allow_inf_nan=False)
    if _is_typeddict(tp):  # a TypedDict carries its own config (nested ones too)
        _configure_typeddicts(tp, config)
        return TypeAdapter(tp)
    return TypeAdapter(tp, config=config)


def _configure_typeddicts(tp: Any, config: Any) -> None:
    if _is_typeddict(tp):
        if "__pydantic_config__" in vars(tp):
            return
        tp.__pydantic_config__ = config
        for hint in typing.get_type_hints(tp).values():
            _configure_typeddicts(hint, config)
    for arg in typing.get_args(tp):
        _configure_typeddicts(arg, config)


def describe(tp: Any) -> str:
    """A short English description of an annotation: ``an integer >= 1``, ``a string``..."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        bounds = [_bound(m) for m in meta]
        text = describe(base)
        bounds_text = " and ".join(b for b in bounds if b)
        return f"{text} {bounds_text}" if bounds_text else text
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is not typing.Any:
            return f"a table of {_plural(describe(args[1]))}"
        return "a table"
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_plural(describe(args[0]))}" if args else "a list"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    names = {
        int: "an integer",
        float: "a finite number",
        str: "a string",
        bool: "true or false",
        typing.Any: "any value",
    }
    return names.get(tp, f"a {getattr(tp, '__name__', str(tp))}")


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article) :] + "s"
    return text


def _bound(meta: Any) -> str:
    parts = []
    for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        value = getattr(meta, attr, None)
        if value is not None:
            parts.append(f"{op} {value:g}" if isinstance(value, float) else f"{op} {value}")
    for item in getattr(meta, "metadata", ()) or ():  # pydantic FieldInfo
        b = _bound(item)
        if b:
            parts.append(b)
    return " and ".join(parts)


def _show(value: Any) -> str:
    text = repr(value)
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _path(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in loc)


def _check_ints(value: Any, key: str, *, source: str) -> None:
    """Integers, nested ones included, must fit a signed 64-bit value (torch and numpy need it)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise ConfigError(
            f"{source}: key '{key}' does not fit a 64-bit integer (got {_show(value)})",
            hint=f"use a value between {INT64_MIN} and {INT64_MAX}",
        )
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_ints(v, f"{key}.{k}", source=source)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_ints(v, f"{key}[{i}]", source=source)


def check_finite(value: Any, *, source: str, key: str = "") -> None:
    """No NaN or infinity anywhere in a table read from a file (nested tables and lists too)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"{source}: key '{key}' must be a finite number (got {_show(value)})",
            hint=f"fix '{key}' in {source}",
        )
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_finite(v, source=source, key=f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, source=source, key=f"{key}[{i}]")


def validate_value(tp: Any, value: Any, *, key: str, source: str) -> Any:
    """Check one value against an annotation; return it unchanged or raise ConfigError."""
    expected = describe(tp)
    try:
        _adapter(tp).validate_python(value)
    except Exception as exc:  # pydantic.ValidationError (pydantic is imported lazily)
        errors = getattr(exc, "errors", None)
        detail = ""
        if callable(errors):
            errs = errors()
            # the innermost failing location beyond the union branch names, e.g. .lr
            locs = [e.get("loc", ()) for e in errs]
            nested = [
                loc
                for loc in locs
                if any(isinstance(p, int) or (isinstance(p, str) and "[" not in p) for p in loc)
            ]
            if nested and len(set(map(tuple, nested))) == 1 and len(errs) == 1:
                inner = _path(tuple(p for p in nested[0] if not _is_branch(p)))
                if inner:
                    detail = f" ({key}{inner}: {errs[0].get('msg', '').lower()})"
        raise ConfigError(
            f"{source}: key '{key}' must be {expected} (got {_show(value)}){detail}",
            hint=f"fix '{key}' in {source} ({expected}), or remove it to use the default",
        ) from None
    _check_ints(value, key, source=source)
    return value


def validation_error(tp: Any, value: Any) -> str | None:
    """Why ``value`` does not fit the annotation ``tp`` (strict, finite), or None when it does."""
    try:
        _adapter(tp).validate_python(value)
    except Exception as exc:  # pydantic.ValidationError (pydantic is imported lazily)
        return str(exc)
    return None


def _is_branch(part: Any) -> bool:
    """pydantic names union branches by their type (``int``, ``dict[str,any]``)."""
    return isinstance(part, str) and (
        part in ("int", "float", "str", "bool", "list", "dict", "function-after")
        or "[" in part
        or part.startswith(("constrained-", "function-"))
    )


def validate_fields(
    cls: type, data: Mapping[str, Any], *, source: str, keys: typing.Iterable[str] | None = None
) -> None:
    """Check every value in ``data`` whose key is a field of the dataclass ``cls``.

    Unknown keys are left to the caller (it knows how to suggest the right one).
    """
    hints = _hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in keys if keys is not None else data:
        if key in fields and key in data:
            validate_value(hints[key], data[key], key=key, source=source)


# --- JSON documents (run.json, config.json, eval.json): one typed reader -----------------

_ERROR_TYPES = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "dict_type": "an object",
    "list_type": "a list",
    "none_required": "null",
}


def validate_document(tp: Any, data: Any, *, source: str, error: type[Exception]) -> Any:
    """Check a parsed JSON document against a TypedDict (``total=False``: only the keys that
    are present are checked; unknown keys are allowed). Raises ``error`` naming the key."""
    try:
        _adapter(tp).validate_python(data)
    except Exception as exc:
        errors = exc.errors() if callable(getattr(exc, "errors", None)) else []
        if not errors:
            raise
        first = errors[0]
        loc = tuple(p for p in first.get("loc", ()) if not _is_branch(p))
        key = ".".join(str(p) for p in loc) or "(top level)"
        wanted = _ERROR_TYPES.get(first.get("type", ""), "")
        why = f"must be {wanted}" if wanted else str(first.get("msg", "is invalid")).lower()
        raise error(
            f"{source}: key '{key}' {why} (got {_show(first.get('input'))})",
            hint="the file was changed by hand or is corrupt; restore it (or train again)",
        ) from None
    return data


def read_json_file(
    path: Any, *, what: str, error: type[Exception], schema: Any = None
) -> dict[str, Any]:
    """Read a JSON object from ``path``: unreadable, not UTF-8, not JSON, not an object, or a
    field of the wrong type (``schema``, a TypedDict) each give one ``error`` naming the file."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise error(
            f"{what} not found: {path}", hint="pass a run directory made by `modelkit train`"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(
            f"cannot read {what} {path}: {exc.strerror or exc}", hint="check its permissions"
        ) from None
    import json

    try:
        data = loads_json(raw.decode("utf-8"), source=str(path), error=error)
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text", hint="the file is corrupt; restore it") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON: {exc}", hint="the file is corrupt") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object", hint="the file is corrupt")
    if schema is not None:
        validate_document(schema, data, source=str(path), error=error)
    return data


class RunModelkitSection(TypedDict, total=False):
    """``config.json``'s ``modelkit`` object."""

    model: str
    train: dict[str, Any]
    reference: dict[str, Any]
    config: dict[str, Any]


class RunConfigFile(TypedDict, total=False):
    """A run's (or release's) ``config.json``: flat model kwargs + ``modelkit``."""

    modelkit: RunModelkitSection


class RunRecordFile(TypedDict, total=False):
    """The fields of ``run.json`` that verbs read, with the types the writers use (null where a
    run may legitimately lack the value, e.g. an own-loop run's seed); others are free-form."""

    version: int
    status: str
    trainer: str
    started: str | None
    finished: str | None
    command: dict[str, Any] | None
    model: str | None
    seed: int | None
    steps: int | None
    num_parameters: int | None
    fingerprint_every: int | None
    config_sha256: str | None
    weights_sha256: str | None
    last_good_checkpoint: str | None
    error: str | None
    metrics: dict[str, Any]
    data: dict[str, Any]
    env: dict[str, Any]
    git: dict[str, Any]
    timings: dict[str, Any]
    determinism: dict[str, Any]
    reference: dict[str, Any] | None


class SafetensorsEntry(TypedDict):
    """One tensor in a safetensors header."""

    dtype: str
    shape: list[Annotated[int, Ge(0)]]
    data_offsets: Annotated[list[Annotated[int, Ge(0)]], MinLen(2), MaxLen(2)]


def check_safetensors_header(header: Any, *, path: Any, error: type[Exception]) -> dict[str, Any]:
    """A parsed safetensors header: an object of tensor entries (dtype, shape, data_offsets
    with start <= end) plus an optional ``__metadata__`` of strings; ``error`` otherwise."""
    where = f"{path}: safetensors header"
    if not isinstance(header, dict):
        raise error(f"{where} is not a JSON object", hint="the weights file is corrupt")
    meta = header.get("__metadata__")
    if meta is not None:
        validate_document(dict[str, str], meta, source=f"{where} __metadata__", error=error)
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise error(f"{where}: tensor '{name}' is not an object", hint="the file is corrupt")
        missing = sorted({"dtype", "shape", "data_offsets"} - set(entry))
        if missing:
            raise error(
                f"{where}: tensor '{name}' has no '{missing[0]}'",
                hint="the weights file is corrupt; re-train or restore it",
            )
        validate_document(SafetensorsEntry, entry, source=f"{where} tensor '{name}'", error=error)
        start, end = entry["data_offsets"]
        if start > end:
            raise error(
                f"{where}: tensor '{name}' data_offsets {start} > {end}",
                hint="the weights file is corrupt; re-train or restore it",
            )
    return header


def _is_typeddict(tp: Any) -> bool:
    import typing_extensions

    return typing_extensions.is_typeddict(tp)
