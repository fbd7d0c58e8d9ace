"""Data specs: ``digits``, ``mnist:PATH``, ``imagefolder:PATH``, ``pystdlib``, ``text:PATH``
(token windows for language models, see :mod:`modelkit.data.text`), a project dataset name
from ``[tool.modelkit.datasets]``, or ``package.module:loader`` (returns a Dataset).

A project dataset is ``name = "pkg.mod:loader"`` or a table whose ``loader`` is such a
reference (or a built-in kind) and whose other keys are the loader's keyword arguments::

    [tool.modelkit.datasets.cifar]
    loader = "my_data:load"
    path = "data/cifar"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelkit.data.augment import normalize_, normalize_spec
from modelkit.data.batches import BatchSource, is_batch_source
from modelkit.errors import BadInputError, DataError, did_you_mean, unknown
from modelkit.models.imports import import_object
from modelkit.usercode import call_user


@dataclass(frozen=True)
class DataSource:
    """A registered data kind: how to load it and whether it takes a path."""

    name: str
    takes_path: bool
    description: str
    example: str
    loader: str  # package.module:function, imported on use (keeps torch out of --help)

    def load(self, arg: str, **options: Any) -> Any:
        """Import the loader and call it with the path (if any) and the options it accepts."""
        import inspect

        fn = import_object(self.loader, what="data loader")
        accepted = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in options.items() if k in accepted}
        return fn(arg, **kwargs) if self.takes_path else fn(**kwargs)


DATA_SOURCES: dict[str, DataSource] = {
    s.name: s
    for s in (
        DataSource(
            "digits",
            False,
            "scikit-learn's bundled 8x8 digits as 1x28x28 (offline)",
            "digits",
            "modelkit.data.digits:load_digits_dataset",
        ),
        DataSource(
            "mnist",
            True,
            "MNIST IDX files (.gz or raw) in a folder",
            "mnist:../shared/data/mnist",
            "modelkit.data.mnist:load_mnist_dataset",
        ),
        DataSource(
            "imagefolder",
            True,
            "class-per-folder images, RGB, resized once and cached",
            "imagefolder:../shared/data/catsdogs",
            "modelkit.data.imagefolder:load_imagefolder_dataset",
        ),
        DataSource(
            "pystdlib",
            False,
            "CPython standard-library source text, byte-level token windows (offline)",
            "pystdlib",
            "modelkit.data.text:load_pystdlib",
        ),
        DataSource(
            "text",
            True,
            "a text file or folder as token windows (tokenizer byte | char)",
            "text:corpus.txt",
            "modelkit.data.text:load_text_dataset",
        ),
    )
}


def list_data_sources(project: Any = None) -> dict[str, str]:
    """Name -> description of every data kind, the project's datasets included."""
    out = {s.example: s.description for s in DATA_SOURCES.values()}
    for name, spec in (getattr(project, "datasets", None) or {}).items():
        ref = spec.get("loader") if isinstance(spec, Mapping) else spec
        out[name] = f"project dataset ({ref})"
    return out


def load_dataset(
    spec: str,
    *,
    project: Any = None,
    skip_bad_files: bool = False,
    download: bool = False,
    image_size: int = 0,
    channels: int = 0,
    normalize: Mapping[str, Any] | None = None,
    context_length: int = 0,
    batches: int = 0,
    text: Mapping[str, Any] | None = None,
) -> Any:
    """Resolve a data spec and load it (a :class:`modelkit.data.base.Dataset`, or a
    :class:`modelkit.data.text.TokenDataset` for text).

    ``image_size``/``channels`` (0: the source's default) reach loaders that take them (image
    folders), ``context_length`` (tokens per window) those of text; ``normalize``
    (``{mean, std}``) is applied per channel after loading. ``batches`` (a batch size; 0: no)
    lets a ``package.module:loader`` return a torch ``Dataset``/``DataLoader`` yielding
    ``(inputs, targets)`` (a :class:`modelkit.data.batches.BatchSource`, for evaluation).
    ``text`` (``{tokenizer, chars}``) reaches text loaders: a run's own tokenization.
    """
    ds = _load(
        spec,
        project=project,
        options={
            "skip_bad_files": skip_bad_files,
            "download": download,
            "image_size": image_size,
            "channels": channels,
            "context_length": context_length,
            "batches": batches,
            **dict(text or {}),
        },
    )
    if normalize:
        if isinstance(ds, BatchSource):  # a loader's batches: normalised as they stream
            ds.normalize = normalize_spec(normalize, channels=None)
        else:
            normalize_(ds, normalize)
    return ds


def _load(spec: str, *, project: Any, options: dict[str, Any]) -> Any:
    kind, sep, arg = spec.partition(":")
    project_sets = getattr(project, "datasets", None) or {}
    if spec in project_sets:
        entry = project_sets[spec]
        if isinstance(entry, Mapping):
            kwargs = {k: v for k, v in entry.items() if k != "loader"}
            return _call_loader(str(entry["loader"]), spec=spec, kwargs=kwargs, options=options)
        return _call_loader(str(entry), spec=spec, kwargs={}, options=options)
    if sep and kind not in DATA_SOURCES:  # package.module:loader, exactly like --model
        return _call_loader(spec, spec=spec, kwargs={}, options=options, guess=kind)
    if kind not in DATA_SOURCES:
        names = list(DATA_SOURCES) + list(project_sets)
        raise unknown(
            "data spec",
            spec,
            names,
            hint="use digits, mnist:PATH, imagefolder:PATH or package.module:loader",
        )
    return _builtin(kind, arg, has_arg=bool(sep), kwargs={}, options=options)


def _builtin(
    kind: str, arg: str, *, has_arg: bool, kwargs: dict[str, Any], options: dict[str, Any]
) -> Any:
    source = DATA_SOURCES[kind]
    arg = str(kwargs.pop("path", arg)) if source.takes_path else arg
    if source.takes_path and not arg:
        raise DataError(f"data spec '{kind}' needs a path", hint=f"e.g. {source.example}")
    if not source.takes_path and (has_arg or "path" in kwargs):
        raise DataError(f"data spec '{kind}' takes no path", hint=f"use '{kind}'")
    merged = {**options, **kwargs}
    import inspect

    accepted = inspect.signature(import_object(source.loader, what="data loader")).parameters
    for key in ("image_size", "channels"):
        if merged.get(key) and key not in accepted:
            raise DataError(
                f"data '{kind}' has a fixed image size and channel count; {key} does not apply",
                hint=f"drop {key}, or use imagefolder:PATH",
            )
    unknown_keys = sorted(set(kwargs) - set(accepted))
    if unknown_keys:
        raise DataError(
            f"data '{kind}' takes no argument '{unknown_keys[0]}'",
            hint=f"{kind} accepts: {', '.join(k for k in accepted if k != 'path')}",
        )
    return source.load(arg, **{k: v for k, v in merged.items() if v or k in kwargs})


def _call_loader(
    ref: str,
    *,
    spec: str,
    kwargs: dict[str, Any],
    options: dict[str, Any],
    guess: str | None = None,
) -> Any:
    """A project or ``package.module:loader`` dataset: import it and call it with ``kwargs``.

    ``ref`` may also be a built-in kind (``loader = "imagefolder"`` with ``path = ...``).
    """
    import inspect

    from modelkit.data.base import Dataset
    from modelkit.data.text import TokenDataset

    kind, sep, arg = ref.partition(":")
    if kind in DATA_SOURCES:
        return _builtin(kind, arg, has_arg=bool(sep), kwargs=dict(kwargs), options=options)
    try:
        loader: Callable[..., Any] = import_object(ref, what="dataset loader")
    except BadInputError:
        close = did_you_mean(guess, DATA_SOURCES) if guess else ""
        if close:  # 'mnsit:PATH' was meant as a built-in kind, not a module
            raise unknown(
                "data spec",
                guess or ref,
                DATA_SOURCES,
                hint=f"e.g. {DATA_SOURCES['mnist'].example}",
            ) from None
        raise
    try:
        inspect.signature(loader).bind(**kwargs)
    except TypeError as exc:
        raise BadInputError(
            f"dataset '{spec}': loader {ref} cannot take {sorted(kwargs) or 'no arguments'}: {exc}",
            hint="match the keys of [tool.modelkit.datasets." + spec + "] to its parameters",
        ) from None
    except ValueError:  # no signature (a builtin); let the call decide
        pass
    else:
        _check_value_types(loader, kwargs, spec=spec, ref=ref)
    ds = call_user("dataset loader", ref, loader, **kwargs)
    batched = options.get("batches") and not isinstance(ds, (Dataset, TokenDataset))
    if batched and is_batch_source(ds):
        return BatchSource(spec, ds, batch_size=options["batches"])
    if not isinstance(ds, (Dataset, TokenDataset)):
        raise BadInputError(
            f"dataset loader '{ref}' returned {type(ds).__name__}, not a Dataset",
            hint="return modelkit.data.base.Dataset(...) or modelkit.data.text.TokenDataset",
        )
    if kwargs:
        ds.info.setdefault("loader", {"ref": ref, "kwargs": kwargs})
    return ds


SIMPLE_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def _check_value_types(
    loader: Callable[..., Any], kwargs: dict[str, Any], *, spec: str, ref: str
) -> None:
    """A dataset table value of another type than the loader's parameter takes (its annotation,
    else its default's type; int, float, str and bool only) is a DataError naming the key."""
    import inspect

    params = inspect.signature(loader).parameters
    for key, value in kwargs.items():
        param = params.get(key)
        if param is None:
            continue
        note = param.annotation
        expected = SIMPLE_TYPES.get(note) if isinstance(note, str) else note
        if expected not in SIMPLE_TYPES.values():
            default = param.default
            expected = type(default) if type(default) in SIMPLE_TYPES.values() else None
        if expected is None:
            continue
        ok = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
        ok = ok or (expected is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise DataError(
                f"dataset '{spec}': {key} = {value!r} must be {expected.__name__} "
                f"(the parameter {key} of loader {ref})",
                hint=f"give {key} a value of type {expected.__name__} in [tool.modelkit.datasets.{spec}]",
            )
