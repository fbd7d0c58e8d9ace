"""The other documents of a run directory, typed: ``config.json`` (:class:`RunConfig`) and the
evaluation files ``eval.json`` / ``evals/NAME.json`` (:class:`EvalRecord`).

Read once (:func:`read_eval_record`, :meth:`RunConfig.from_dict`), then fields; the task's own
check (``Task.check_result``) still decides whether an evaluation is complete.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.errors import RunDirError
from modelkit.models.configs import RecordedConfig
from modelkit.models.reference import ModelReference
from modelkit.runs.parts import Reference
from modelkit.runs.typed import read_typed, to_plain
from modelkit.validation import read_json_file

# keys of an evaluation file that are not metrics
_EVAL_META = {
    "task",
    "data",
    "weights_sha256",
    "evaluated",
    "device",
    "classes",
    "per_class_accuracy",
    "confusion_matrix",
}


@dataclass(frozen=True)
class EvalData:
    """The data an evaluation ran on: its public ``name``, ``spec``, ``fingerprint``,
    ``split`` and whether it is the training data's held-out split."""

    name: str | None = None
    spec: str | None = None
    fingerprint: str | None = None
    split: str | None = None
    same_as_training: bool | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EvalRecord:
    """An evaluation file: the task, the data, the metrics (``loss``, ``accuracy``,
    ``perplexity``, counts ...), per-class results for classification, and the weights it
    evaluated. ``metrics`` holds every number the file states, by name."""

    task: str | None = None
    data: EvalData = field(default_factory=EvalData)
    weights_sha256: str | None = None
    evaluated: str | None = None
    device: str | None = None
    classes: list[Any] | None = None
    per_class_accuracy: dict[str, float | None] | None = None
    confusion_matrix: list[list[int]] | None = None
    metrics: dict[str, float] = field(default_factory=dict, metadata={"derived": True})
    path: str | None = field(default=None, metadata={"derived": True})
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def metric(self, name: str) -> float | None:
        """A metric by name (None when the file does not state it)."""
        return self.metrics.get(name)

    @property
    def loss(self) -> float | None:
        """The mean loss."""
        return self.metrics.get("loss")

    def count(self, name: str) -> Any:
        """A count as the file states it (``samples``, ``tokens``: an int, not a metric's float)."""
        return self.raw.get(name)

    @property
    def data_name(self) -> str | None:
        """The dataset's public name."""
        return self.data.name

    def with_data_name(self, name: str) -> EvalRecord:
        """The same evaluation shown under another dataset name."""
        return dataclasses.replace(self, data=dataclasses.replace(self.data, name=name))

    def to_dict(self) -> dict[str, Any]:
        """The evaluation as JSON-ready data (as written, with a changed data name laid over)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> EvalRecord:
        """A parsed evaluation file (a field of the wrong type is a RunDirError naming it)."""
        record = read_typed(cls, data, source=source)
        numbers = {
            k: float(v)
            for k, v in data.items()
            if k not in _EVAL_META
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(float(v))
        }
        return dataclasses.replace(record, metrics=numbers, path=source)


@dataclass(frozen=True)
class ModelkitSection:
    """``config.json``'s ``modelkit`` object: the model's registered name, how to rebuild it
    (``reference``), ``modelkit train``'s resolved config (``train``) or an own loop's config
    as its script gave it (``config``)."""

    model: str | None = None
    reference: Reference | None = None
    train: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class RunConfig:
    """A run's (or a release's) ``config.json``: the model's keyword arguments at the top
    level (``model_kwargs``) and the ``modelkit`` section."""

    modelkit: ModelkitSection = field(default_factory=ModelkitSection)
    model_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"derived": True})
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def model_name(self) -> str | None:
        """The model's name: registered, else its reference's factory or class name."""
        ref = self.modelkit.reference
        return self.modelkit.model or (ref.attr if ref is not None and ref.ref else None)

    @property
    def own_loop(self) -> bool:
        """Written by an own loop (``config``), not by ``modelkit train`` (``train``)."""
        return not self.modelkit.train

    @property
    def training_config(self) -> dict[str, Any]:
        """``modelkit train``'s config, else the own loop's config, else ``{}``."""
        return dict(self.modelkit.train or self.modelkit.config or {})

    @property
    def has_modelkit_section(self) -> bool:
        """True when the file has a ``modelkit`` object (modelkit wrote it)."""
        return isinstance(self.raw.get("modelkit"), dict)

    @property
    def train_model_kwargs(self) -> dict[str, Any]:
        """``modelkit train``'s ``model_kwargs`` (``{}`` for an own loop)."""
        kwargs = (self.modelkit.train or {}).get("model_kwargs")
        return dict(kwargs) if isinstance(kwargs, dict) else {}

    def model_reference(self, *, source: str) -> ModelReference | None:
        """The recorded reference as the :class:`ModelReference` that rebuilds the model
        (None when the file has none)."""
        ref = self.modelkit.reference
        return None if ref is None else read_model_reference(ref.raw, source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> RunConfig:
        """A parsed config.json (a field of the wrong type is a RunDirError naming it)."""
        record = read_typed(cls, data, source=source)
        kwargs = {k: v for k, v in data.items() if k != "modelkit"}
        return dataclasses.replace(record, model_kwargs=kwargs)


def read_eval_record(path: Path | str) -> EvalRecord:
    """An evaluation file, typed (unreadable or not an object: RunDirError naming it)."""
    data = read_json_file(path, what="evaluation", error=RunDirError)
    return EvalRecord.from_dict(data, source=str(path))


def read_model_reference(data: Any, *, source: str) -> ModelReference:
    """A ``modelkit.reference`` table (config.json's, or one given to ``start_run``) as the
    :class:`ModelReference` that rebuilds the model, refusing wrong shapes with the file named."""
    if not isinstance(data, dict):
        raise RunDirError(
            f"{source}: modelkit.reference must be a table, got {type(data).__name__}",
            hint="the file is corrupt or was edited by hand",
        )
    ref, kwargs = data.get("ref"), data.get("kwargs", {})
    if not isinstance(ref, str) or ":" not in ref:
        raise RunDirError(
            f"{source}: modelkit.reference.ref must be 'module:attr', got {ref!r}",
            hint="the file is corrupt or was edited by hand",
        )
    if not isinstance(kwargs, dict):
        raise RunDirError(
            f"{source}: modelkit.reference.kwargs must be a table, got {type(kwargs).__name__}",
            hint="the file is corrupt or was edited by hand",
        )
    package, version = data.get("package"), data.get("version")
    for key, value in (("package", package), ("version", version)):
        if value is not None and not isinstance(value, str):
            raise RunDirError(
                f"{source}: modelkit.reference.{key} must be a string or null",
                hint="the file is corrupt or was edited by hand",
            )
    return ModelReference(
        ref=ref,
        kwargs=dict(kwargs),
        package=package,
        version=version,
        configs=read_config_args(data.get("configs", {}), source=source),
    )


def read_config_args(data: Any, *, source: str) -> dict[str, RecordedConfig]:
    """A reference's ``configs`` table: argument name -> the recorded config object."""
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise RunDirError(
            f"{source}: modelkit.reference.configs must be a table of tables",
            hint="the file is corrupt or was edited by hand",
        )
    return {
        name: read_typed(
            RecordedConfig, entry, source=source, where=f"modelkit.reference.configs.{name}"
        )
        for name, entry in data.items()
    }
