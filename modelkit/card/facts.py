"""The facts a card states, read from a run directory: record, config, evaluations, the model.

Also a dataset's public name: a data spec may hold a local path (``mnist:/home/me/data/mnist``);
what a card or an ``evals/`` file name shows is the dataset's name (``mnist``), never the path.
Anything the run does not record is stated as ``unknown`` (:func:`known`), never ``None``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.card.options import project_license as project_license  # re-exported
from modelkit.errors import RunDirError
from modelkit.models.registry import resolve_model
from modelkit.runs.documents import EvalRecord, RunConfig
from modelkit.runs.layout import EVALS_DIR
from modelkit.runs.parts import DataInfo, Reference
from modelkit.runs.record import RunRecord
from modelkit.runs.typed import to_plain
from modelkit.tasks import task_of
from modelkit.weights import INDEX, WeightsSummary, summarize

UNKNOWN = "unknown"


def dataset_name(spec: str | None) -> str:
    """The public name of a data spec: ``digits`` -> digits, ``mnist:/a/b/mnist`` -> mnist,
    ``imagefolder:/data/catsdogs`` -> catsdogs, ``pkg.data:load_toy`` -> load_toy."""
    if not spec:
        return UNKNOWN
    kind, sep, rest = str(spec).partition(":")
    if not sep:
        return kind
    parts = [p for p in re.split(r"[\\/]", rest) if p]  # POSIX or Windows separators
    return parts[-1] if parts else kind


def other_data_name(spec: str | None, fingerprint: str | None, *, training: str | None) -> str:
    """The name of data other than the training data's, never equal to the training data's name
    (``mnist`` elsewhere on disk becomes ``mnist-1a2b3c4d``, from its fingerprint)."""
    name = dataset_name(spec)
    if name == dataset_name(training):
        short = str(fingerprint or "").rpartition(":")[2][:8] or "other"
        name = f"{name}-{short}"
    return name


def slug(name: str) -> str:
    """A file-name-safe form of ``name``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or UNKNOWN


def known(value: object, *, unknown: str = UNKNOWN) -> str:
    """``value`` as text, or ``unknown`` for None / empty (a card never says None)."""
    if value is None or value == "" or value == [] or value == {}:
        return unknown
    return str(value)


# ------------------------------------------------------------------------------------ facts
# TrainConfig's field names, looked up in the training config as the run wrote it (an own
# loop's config is its script's own table: where it uses these names, they mean the same)
DATA, MODEL_KWARGS, OPTIMIZER, NAME = "data", "model_kwargs", "optimizer", "name"


@dataclass(frozen=True)
class TrainingConfig:
    """The training config the card shows as written: ``modelkit train``'s TrainConfig
    (``key`` ``train``) or an own loop's, as its script gave it (``key`` ``config``)."""

    key: str
    values: dict[str, Any]

    @property
    def data(self) -> Any:
        """The data spec it names (TrainConfig's ``data``), if any."""
        return self.values.get(DATA)

    @property
    def optimizer(self) -> str:
        """The optimizer's name, lower-cased (``""`` when the config names none)."""
        opt = self.values.get(OPTIMIZER)
        return str(opt.get(NAME) if isinstance(opt, dict) else opt or "").lower()


@dataclass(frozen=True)
class WeightsFacts:
    """The weights as their safetensors headers describe them (no tensor read); ``label``
    names the files in a line (`model.safetensors`, or N shards + the index)."""

    summary: WeightsSummary
    label: str

    @property
    def num_parameters(self) -> int:
        return self.summary.num_parameters

    @property
    def num_tensors(self) -> int:
        return self.summary.num_tensors

    @property
    def dtypes(self) -> dict[str, int]:
        """dtype -> number of elements."""
        return self.summary.dtypes

    @property
    def file_bytes(self) -> int:
        return self.summary.file_bytes


@dataclass(frozen=True)
class PlainLoad:
    """What a plain ``load_state_dict`` snippet needs: whether the weights are sharded, and
    which shared tensors are stored under another name (dropped name -> stored name)."""

    sharded: bool
    shared: dict[str, str]

    def snippet_facts(self) -> dict[str, Any]:
        """As :func:`modelkit.weights.snippet.release_snippet` takes them."""
        return {"sharded": self.sharded, "shared": dict(self.shared)}


@dataclass(frozen=True)
class ArchFacts:
    """The model: rebuilt from config.json on ``meta`` (no memory, no weights needed)."""

    name: str  # its registered name, else its reference's factory or class name
    qualified: str  # module.Class
    class_name: str
    module: str
    summary: str  # the first line of its module's (else class's) docstring
    description: str | None  # the registry's description (None for a reference-only model)
    tree: str  # the module tree, repr(model)
    mixin: bool  # a PyTorchModelHubMixin (its own from_pretrained works)
    library: str
    kwargs: dict[str, Any]
    reference: Reference  # empty when config.json records none (runs made before references)
    weights: PlainLoad


@dataclass(frozen=True)
class CardFacts:
    """Everything a card states, read once from the run directory: every section and the
    metadata render from these attributes."""

    record: RunRecord
    config: RunConfig
    task: Any  # modelkit.tasks.Task
    train: TrainingConfig
    data_name: str  # the training data's public name
    eval: EvalRecord | None  # on the training data's held-out split
    other_evals: tuple[EvalRecord, ...]  # on other data, each under its own name
    weights: WeightsFacts
    arch: ArchFacts

    @property
    def reported(self) -> dict[str, Any]:
        """An own loop's final metrics, as its script reported them (``run.finish(metrics=...)``)."""
        return dict(self.record.metrics) if self.record.own_loop else {}


def gather_facts(run_dir: Path, *, project: Any) -> CardFacts:
    """The :class:`CardFacts` of a run (exit 2 naming the file when one is missing or wrong)."""
    from modelkit.release.package import require_evaluation
    from modelkit.runs import open_run

    run = open_run(run_dir, require=("run.json", "config.json"))
    weights = weights_facts(run.path)  # either layout, checked; a bad shard is named
    record = run.run_record()
    task = task_of(record)
    require_evaluation(run.path, task=task)  # eval.json, or (own loops, other data) evals/*.json
    cfg = run.run_config()
    evaluation = read_eval(run.eval, task) if run.eval.is_file() else None
    arch = architecture(run.path, cfg, project=project)
    # modelkit train's TrainConfig, else (an own loop) the script's config as it gave it
    train = TrainingConfig("config" if cfg.own_loop else "train", cfg.training_config)
    training_spec = record.data.spec or train.data
    training_name = dataset_name(training_spec or _own_name(record.data))
    # results on other data: evals/*.json, and an eval.json that is not the training data's
    # (written by an older modelkit's `eval --data`): each shown under its own dataset name
    others = [read_eval(p, task) for p in sorted((run.path / EVALS_DIR).glob("*.json"))]
    if evaluation is not None and evaluation.data.fingerprint != record.data.fingerprint:
        others.insert(0, evaluation)
        evaluation = None
    return CardFacts(
        record=record,
        config=cfg,
        task=task,
        train=train,
        data_name=training_name,
        eval=evaluation,
        other_evals=tuple(_named(ev, training_name, training_spec) for ev in others),
        weights=weights,
        arch=arch,
    )


def _named(ev: EvalRecord, training_name: str, training_spec: Any) -> EvalRecord:
    """An evaluation on other data under its own name, never the training data's."""
    name = ev.data.name or dataset_name(ev.data.spec)
    if name == training_name:
        name = other_data_name(ev.data.spec, ev.data.fingerprint, training=training_spec)
    return ev.with_data_name(name)


def _own_name(data: DataInfo) -> str | None:
    """An own loop's data name (a class name, or a path's last part: never a local path)."""
    name = data.name
    if not name or name == UNKNOWN:
        return None
    return re.split(r"[\\/]", str(name).rstrip("/\\"))[-1] or None


def read_eval(path: Path, task: Any) -> EvalRecord:
    """An evaluation file (docs/tasks.md, "Evaluation files"), checked against ``task``."""

    try:
        ev = json.loads(path.read_text(encoding="utf-8"))
        task.check_result(ev, source=str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        what = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else type(exc).__name__
        raise RunDirError(
            f"{path} is not a {task.name} evaluation result ({what})",
            hint=f"re-run: modelkit eval {path.parent if path.name == 'eval.json' else path.parent.parent}",
        ) from None
    return EvalRecord.from_dict(ev, source=str(path))


def weights_facts(run_dir: Path) -> WeightsFacts:
    """Parameter count, dtypes, shapes, files and bytes of a run's weights (either layout),
    from the safetensors headers alone: no tensor is read, no model is built."""
    summary = summarize(run_dir)
    shards = sorted(name for name in summary.files if name != INDEX)
    label = (
        f"{len(shards)} shards (`{shards[0]}` …) + `{INDEX}`"
        if summary.layout == "sharded"
        else f"`{shards[0]}`"
    )
    return WeightsFacts(summary, label)


def architecture(run_dir: Path, cfg: RunConfig, *, project: Any) -> ArchFacts:
    """Model class, source and module tree, rebuilt from config.json with its parameters on
    ``meta`` (no memory, no random init; the weights are not needed)."""
    from modelkit.models.weights import build_empty

    name = cfg.model_name  # an own-loop run may name only its reference
    if not name:
        raise RunDirError(f"{run_dir}/config.json does not name its model", hint="re-train")
    model, _ = build_empty(to_plain(cfg), source=f"{run_dir}/config.json", project=project)
    reference = cfg.modelkit.reference
    # runs made before references: the model's kwargs are the TrainConfig's
    kwargs = reference.kwargs if reference is not None else _train_kwargs(cfg)
    cls = type(model)
    doc = (cls.__doc__ or "").strip().splitlines()
    module_doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()
    description = None
    try:
        description = resolve_model(name, project=project).description
    except Exception:  # a model known only by its reference
        description = None
    mixin, library = _hub_mixin(model)
    summary = module_doc[0] if module_doc else (doc[0] if doc else description)
    summary = summary.strip().rstrip(".") if summary else None
    return ArchFacts(
        name=name,
        qualified=f"{cls.__module__}.{cls.__qualname__}",
        class_name=cls.__qualname__,
        module=cls.__module__,
        summary=summary or "no description",
        description=description if description and ":" not in description else None,
        tree=repr(model),
        mixin=mixin,
        library=library or "pytorch",
        kwargs=kwargs,
        reference=reference or Reference(),
        weights=plain_load_facts(run_dir),
    )


def _train_kwargs(cfg: RunConfig) -> Any:
    """The model's kwargs as ``modelkit train``'s config states them (``{}`` if it does not)."""
    return (cfg.modelkit.train or {}).get(MODEL_KWARGS, {})


def _hub_mixin(model: Any) -> tuple[bool, str | None]:
    """``(is a PyTorchModelHubMixin, the library name its mixin declares)``."""
    try:
        from huggingface_hub import PyTorchModelHubMixin
    except ImportError:  # pragma: no cover
        return False, None
    info = getattr(type(model), "_hub_mixin_info", None)
    library = getattr(info, "library_name", None) or getattr(
        getattr(info, "model_card_data", None), "library_name", None
    )
    return isinstance(model, PyTorchModelHubMixin), library


def plain_load_facts(run_dir: Path) -> PlainLoad:
    """What a plain ``load_state_dict`` snippet needs to know (from the headers)."""
    summary = summarize(run_dir)
    return PlainLoad(sharded=summary.layout == "sharded", shared=dict(summary.shared))
