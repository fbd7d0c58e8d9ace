"""Data specs: ``digits``, ``mnist:PATH``, ``imagefolder:PATH``, a project dataset name
from ``[tool.modelkit.datasets]``, or ``package.module:loader`` (returns a Dataset)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelkit.errors import BadInputError, DataError, unknown


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

        from modelkit.project import import_object

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
    )
}


def list_data_sources(project: Any = None) -> dict[str, str]:
    """Name -> description of every data kind, the project's datasets included."""
    out = {s.example: s.description for s in DATA_SOURCES.values()}
    for name, spec in (getattr(project, "datasets", None) or {}).items():
        out[name] = f"project dataset ({spec})"
    return out


def load_dataset(
    spec: str,
    *,
    project: Any = None,
    skip_bad_files: bool = False,
    download: bool = False,
    image_size: int = 28,
) -> Any:
    """Resolve a data spec and load it (returns :class:`modelkit.data.base.Dataset`)."""
    from modelkit.data.base import Dataset

    kind, sep, arg = spec.partition(":")
    project_sets = getattr(project, "datasets", None) or {}
    if spec in project_sets or (sep and kind not in DATA_SOURCES and "." in kind):
        from modelkit.project import import_object

        loader: Callable[..., Any] = import_object(project_sets.get(spec, spec), what="dataset")
        ds = loader()
        if not isinstance(ds, Dataset):
            raise BadInputError(
                f"dataset loader '{spec}' returned {type(ds).__name__}, not a Dataset",
                hint="return modelkit.data.base.Dataset(...)",
            )
        return ds
    if kind not in DATA_SOURCES:
        names = list(DATA_SOURCES) + list(project_sets)
        raise unknown(
            "data spec",
            spec,
            names,
            hint="use digits, mnist:PATH or imagefolder:PATH (see `modelkit models`)",
        )
    source = DATA_SOURCES[kind]
    if source.takes_path and not arg:
        raise DataError(f"data spec '{kind}' needs a path", hint=f"e.g. {source.example}")
    if not source.takes_path and sep:
        raise DataError(f"data spec '{kind}' takes no path", hint=f"use '{kind}'")
    return source.load(arg, download=download, image_size=image_size, skip_bad_files=skip_bad_files)
