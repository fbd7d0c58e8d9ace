"""Held-out evaluation through the run's task (:mod:`modelkit.tasks`): the task reads the
model's output and accumulates its metrics (classification: accuracy, loss, per-class
accuracy, confusion matrix; language modelling: perplexity, loss per token, bits per byte).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from modelkit.data import load_dataset
from modelkit.data.batches import BatchSource
from modelkit.errors import BadInputError, DataError, RunDirError
from modelkit.io import write_json_atomic
from modelkit.models.imports import import_object
from modelkit.runs.documents import EvalRecord
from modelkit.tasks import Accumulator, Task, get_task, task_of
from modelkit.tasks.classification import ConfusionAccumulator, summarize
from modelkit.usercode import call_user
from modelkit.weights import identity_of, verified_weights

if TYPE_CHECKING:
    from modelkit.runs import RunRecord

__all__ = [
    "evaluate",
    "evaluate_counts",
    "evaluate_run",
    "evaluate_task",
    "evaluation_of_run",
    "summarize",
]


def _tensor_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


@torch.no_grad()
def accumulate(
    model: torch.nn.Module,
    batches: Any,
    *,
    task: Task,
    acc: Accumulator,
    device: torch.device | None = None,
    autocast: Callable[[], Any] | None = None,
    memory_format: torch.memory_format | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Accumulator:
    """Feed ``(inputs, targets)`` batches through ``model`` into ``acc``; returns it.

    ``device`` moves host batches to the model (non-blocking); ``autocast`` is a context
    factory (mixed precision); ``memory_format`` e.g. channels_last for 4-D inputs;
    ``transform`` the run's recorded input preprocessing.
    """
    was_training = model.training
    model.eval()
    for xb, yb in batches:
        if device is not None and xb.device != device:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if memory_format is not None and xb.ndim == 4:
            xb = xb.contiguous(memory_format=memory_format)
        if transform is not None:
            xb = transform(xb)
        if autocast is None:
            output = task.forward(model, xb, yb)
        else:
            with autocast():
                output = task.forward(model, xb, yb)
        acc.update(output, yb)
    model.train(was_training)
    return acc


def evaluate_task(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: Task,
    data: Any,
    batch_size: int = 1024,
    **kwargs: Any,
) -> Accumulator:
    """The task's accumulator over ``(x, y)`` in batches (sums: ranks can add them up)."""
    batches = _tensor_batches(x, y, batch_size)
    return accumulate(model, batches, task=task, acc=task.accumulator(data), **kwargs)


def evaluate_counts(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 1024,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification: ``(confusion matrix int64 on CPU, summed loss float64)``."""

    task = get_task("classification")
    acc = ConfusionAccumulator(num_classes)
    accumulate(model, _tensor_batches(x, y, batch_size), task=task, acc=acc, **kwargs)
    return acc.confusion, acc.loss_sum


def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 1024,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """Classification metrics of ``model`` on ``(x, y)``; JSON-ready."""
    confusion, loss_sum = evaluate_counts(
        model, x, y, num_classes=num_classes, batch_size=batch_size
    )
    return summarize(confusion, loss_sum, classes=classes)


def check_data_fits(
    model: torch.nn.Module, data: Any, *, task: Task, spec: str, record: RunRecord,
    device: Any, transform: Any = None,
) -> None:  # fmt: skip
    """A DataError (exit 2) when ``data`` does not fit the run: another task's data, samples
    shaped unlike the training data's (run.json ``data.input_shape``), or an output the task
    cannot read against the data's targets."""

    def refuse(why: str) -> DataError:
        return DataError(
            f"data '{spec}' does not fit the model: {why}",
            hint="evaluate on data shaped like the training data (see run.json data)",
        )

    kind = getattr(data, "task", None)
    if kind is not None and kind != task.name:
        raise refuse(f"it is {kind} data, the run is a {task.name} model")
    trained = record.input_shape
    if trained and list(data.input_shape) != list(trained):
        raise refuse(f"samples are {tuple(data.input_shape)}, trained on {tuple(trained)}")
    x, y = data.x_test[:2].to(device), data.y_test[:2].to(device)
    try:
        with torch.no_grad():
            out = task.forward(model.eval(), transform(x) if transform else x, y)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:  # a shape mismatch
        raise refuse((str(exc).splitlines() or [type(exc).__name__])[0]) from None
    problem = task.check_fit(out, y, data)
    if problem is not None:
        raise refuse(problem)
    classes = record.data_classes
    have = getattr(data, "classes", None)
    if isinstance(classes, list) and isinstance(have, list) and len(have) != len(classes):
        raise refuse(f"it has {len(have)} classes, the run was trained on {len(classes)}")


def eval_transform(
    record: RunRecord, model: Any = None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The input preprocessing an own loop recorded (``start_run(eval_transform=...)``): a
    ``package.module:function``, or ``model.ATTR``, the model's own (a Lightning module's
    ``normalize``, say)."""
    ref = record.eval_transform
    if not ref:
        return None
    import functools

    if str(ref).startswith("model."):
        target: Any = model
        for part in str(ref).split(".")[1:]:
            target = getattr(target, part, None)
        if not callable(target):
            raise BadInputError(
                f"the run's eval_transform '{ref}' is not a callable of the model",
                hint="record an importable function instead: 'package.module:function'",
            )
        return functools.partial(call_user, "eval transform", str(ref), target)

    fn = import_object(str(ref), what="eval transform")
    return functools.partial(call_user, "eval transform", str(ref), fn)


def load_eval_data(
    spec: str, *, project: Any, record: RunRecord, train_cfg: Any, skip: bool,
    batch_size: int,
) -> Any:  # fmt: skip
    """The held-out data a run is evaluated on, prepared as the run's training data was: the
    same image size, channels and normalisation, the same context length for text; a loader
    may return any torch Dataset/DataLoader (a BatchSource)."""

    shape: dict[str, Any] = {"context_length": record.context_length}
    tokenizer = record.data.tokenizer
    if tokenizer is not None:  # text is tokenized as the run's was (a char vocabulary too)
        chars = record.data.chars
        shape["text"] = {"tokenizer": tokenizer, **({"chars": chars} if chars else {})}
    if train_cfg is not None:
        shape.update(
            image_size=train_cfg.image_size,
            channels=train_cfg.channels,
            normalize=train_cfg.normalize,
        )
    return load_dataset(spec, project=project, skip_bad_files=skip, batches=batch_size, **shape)


def _result_name(
    spec: str, fingerprint: str, *, record: RunRecord, train_cfg: Any
) -> tuple[str, bool]:
    from modelkit.card.facts import dataset_name, other_data_name

    if fingerprint == record.data_fingerprint:
        return dataset_name(spec), True
    training = record.data_spec or (train_cfg.data if train_cfg else record.data_name)
    return other_data_name(spec, fingerprint, training=training), False


def _data_to_evaluate(
    run: Any, record: RunRecord, *, data: str | None, skip_bad_files: bool
) -> tuple[Any, str, bool]:
    """``(training config or None, data spec, skip bad files)``: ``data``, else the run's own.

    A run trained by its own loop records no modelkit data spec, so it needs ``data``.
    """

    own_loop = record.own_loop
    if own_loop and data is None:
        raise RunDirError(
            f"{run.path} was trained by its own loop, so it names no modelkit data spec",
            hint="pass the held-out data: --data SPEC (e.g. --data digits)",
        )
    train_cfg = None if own_loop else run.train_config()
    spec = data or train_cfg.data
    skip = skip_bad_files or bool(train_cfg and train_cfg.skip_bad_files)
    return train_cfg, spec, skip


def evaluate_run(run_dir: Any, **options: Any) -> dict[str, Any]:
    """:func:`evaluation_of_run` as the file's data (with ``"path"``: where it went)."""
    return evaluation_of_run(run_dir, **options).to_dict()


def evaluation_of_run(
    run_dir: Any,
    *,
    data: str | None = None,
    project: Any = None,
    device: str = "auto",
    skip_bad_files: bool = False,
    batch_size: int = 1024,
    write: bool = True,
    trust_unrecorded: bool = False,
) -> EvalRecord:
    """Evaluate a run's weights on the held-out split of its data (or ``data``), by its task.

    The training data's result goes to ``eval.json``, other data's to ``evals/<name>.json``
    (``result.path``; format: docs/tasks.md). The weights are checked against run.json
    (``trust_unrecorded`` accepts a run that records none); ``weights_sha256`` names them.
    """
    from modelkit.models.weights import load_model_from_dir
    from modelkit.runs import open_run, read_run_record
    from modelkit.training.setup import resolve_device

    run = open_run(run_dir, require=("run.json", "config.json"))
    layout = verified_weights(run.path, trust_unrecorded=trust_unrecorded)  # either layout
    record = read_run_record(run)
    task, dev = task_of(record), resolve_device(device)
    train_cfg, spec, skip = _data_to_evaluate(run, record, data=data, skip_bad_files=skip_bad_files)
    ds = load_eval_data(
        spec, project=project, record=record, train_cfg=train_cfg, skip=skip,
        batch_size=batch_size,
    )  # fmt: skip
    model, _ = load_model_from_dir(run.path, project=project, device=dev, layout=layout)
    actual = identity_of(run.path, layout)
    transform = eval_transform(record, model)
    if isinstance(ds, BatchSource):
        ds.classes = record.data_classes  # a loader's batches name none: the run's
        batches: Any = ds.batches()
    else:
        check_data_fits(
            model, ds, task=task, spec=spec, record=record, device=dev, transform=transform
        )
        ds.to(dev)
        batches = _tensor_batches(ds.x_test, ds.y_test, batch_size)
    acc = _accumulate_checked(
        model, batches, task=task, data=ds, spec=spec, device=dev, transform=transform
    )
    return _finish_result(
        {"task": task.name, **acc.summary()}, run, spec=spec, fingerprint=ds.fingerprint,
        record=record, train_cfg=train_cfg, weights=actual, device=dev, write=write,
    )  # fmt: skip


def _finish_result(
    result: dict[str, Any], run: Any, *, spec: str, fingerprint: str, record: RunRecord,
    train_cfg: Any, weights: str, device: Any, write: bool,
) -> EvalRecord:  # fmt: skip
    """Name the data, add provenance, and write eval.json or evals/NAME.json (``write``)."""
    from modelkit.card.facts import slug
    from modelkit.runs import EVALS_DIR, now_iso

    name, same = _result_name(spec, fingerprint, record=record, train_cfg=train_cfg)
    result.update(
        data={
            "name": name,
            "spec": spec,
            "fingerprint": fingerprint,
            "split": "held-out",
            "same_as_training": same,
        },
        weights_sha256=weights,
        evaluated=now_iso(),
        device=str(device),
    )
    # the training data's held-out result is eval.json (what the card reports as the model's);
    # other data never replaces it: evals/<dataset name>.json, shown under its own name
    path = run.eval if same else run.path / EVALS_DIR / f"{slug(name)}.json"
    if write:
        path.parent.mkdir(exist_ok=True)
        write_json_atomic(path, result)
    as_written = json.loads(json.dumps({**result, "path": str(path)}))  # class names as keys
    return EvalRecord.from_dict(as_written, source=str(path))


def _accumulate_checked(
    model: Any, batches: Any, *, task: Task, data: Any, spec: str, device: Any, transform: Any
) -> Accumulator:
    """Accumulate; a loader's first batch that does not fit is a DataError, not a crash."""

    acc = task.accumulator(data)

    def checked() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, (xb, yb) in enumerate(batches):
            if i == 0 and not hasattr(data, "x_test"):  # a loader's batches: check the first
                x, y = xb[:2].to(device), yb[:2].to(device)
                try:
                    with torch.no_grad():
                        out = task.forward(model.eval(), transform(x) if transform else x, y)
                    problem = task.check_fit(out, y, data)
                except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                    problem = (str(exc).splitlines() or [type(exc).__name__])[0]
                if problem is not None:
                    raise DataError(
                        f"data '{spec}' does not fit the model: {problem}",
                        hint=f"yield (inputs, targets) batches a {task.name} model takes",
                    )
            yield xb, yb

    return accumulate(model, checked(), task=task, acc=acc, device=device, transform=transform)
