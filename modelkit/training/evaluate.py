"""Held-out evaluation: accuracy, loss, per-class accuracy, confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from modelkit.weights import identity_of, verified_weights


@torch.no_grad()
def evaluate_counts(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 1024,
    device: torch.device | None = None,
    autocast: Callable[[], Any] | None = None,
    memory_format: torch.memory_format | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(confusion matrix int64 on CPU, summed loss float64)`` of ``model`` on ``(x, y)``.

    Sums, not means, so ranks holding shards of the held-out set can add them up. ``device``
    moves host batches to the model (non-blocking); ``autocast`` is a context factory (mixed
    precision); ``memory_format`` e.g. channels_last for 4-D inputs.
    """
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device or x.device)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        if device is not None and xb.device != device:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if memory_format is not None and xb.ndim == 4:
            xb = xb.contiguous(memory_format=memory_format)
        if autocast is None:
            logits = model(xb)
        else:
            with autocast():
                logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").double()
        pred = logits.argmax(1)
        idx = (yb * num_classes + pred).cpu()
        confusion += torch.bincount(idx, minlength=num_classes * num_classes).view(
            num_classes, num_classes
        )
    model.train(was_training)
    return confusion, loss_sum


def summarize(
    confusion: torch.Tensor, loss_sum: torch.Tensor | float, *, classes: list[str] | None = None
) -> dict[str, Any]:
    """JSON-ready metrics (accuracy, loss, per-class accuracy, confusion) from summed counts."""
    num_classes = confusion.shape[0]
    n = int(confusion.sum())
    correct = int(confusion.diag().sum())
    per_class_total = confusion.sum(1)
    names = classes or [str(i) for i in range(num_classes)]
    return {
        "accuracy": correct / n if n else 0.0,
        "loss": float(loss_sum) / n if n else float("nan"),
        "samples": n,
        "per_class_accuracy": {
            names[c]: (int(confusion[c, c]) / int(per_class_total[c]))
            if per_class_total[c]
            else None
            for c in range(num_classes)
        },
        "confusion_matrix": confusion.tolist(),
        "classes": names,
    }


def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 1024,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``(x, y)`` in batches; returns JSON-ready metrics."""
    confusion, loss_sum = evaluate_counts(
        model, x, y, num_classes=num_classes, batch_size=batch_size
    )
    return summarize(confusion, loss_sum, classes=classes)


def evaluate_run(
    run_dir: Any,
    *,
    data: str | None = None,
    project: Any = None,
    device: str = "auto",
    skip_bad_files: bool = False,
    batch_size: int = 1024,
    write: bool = True,
    trust_unrecorded: bool = False,
) -> dict[str, Any]:
    """Evaluate a run's weights on the held-out split of its data (or ``data``).

    The training data's result goes to ``eval.json``; a result on other data goes to
    ``evals/<dataset name>.json`` and never replaces it. ``result["path"]`` says which.
    The weights (either layout) are checked against run.json's record (``trust_unrecorded``
    accepts a run that records none); the result names their identity (``weights_sha256``).
    """
    from modelkit.card.facts import dataset_name, other_data_name, slug
    from modelkit.data import load_dataset
    from modelkit.errors import DataError, RunDirError
    from modelkit.io import write_json_atomic
    from modelkit.models.weights import load_model_from_dir
    from modelkit.runs import now_iso, open_run, read_run_record
    from modelkit.training.setup import resolve_device

    run = open_run(run_dir, require=("run.json", "config.json"))
    layout = verified_weights(run.path, trust_unrecorded=trust_unrecorded)  # either layout
    record = read_run_record(run).raw
    dev = resolve_device(device)
    own_loop = record.get("trainer") == "user"
    if own_loop and data is None:
        raise RunDirError(
            f"{run.path} was trained by its own loop, so it names no modelkit data spec",
            hint="pass the held-out data: --data SPEC (e.g. --data digits)",
        )
    train_cfg = None if own_loop else run.train_config()
    spec = data or train_cfg.data
    skip = skip_bad_files or bool(train_cfg and train_cfg.skip_bad_files)
    # the model was trained on these image sizes/channels and normalised inputs
    shape = (
        {}
        if train_cfg is None
        else {
            "image_size": train_cfg.image_size,
            "channels": train_cfg.channels,
            "normalize": train_cfg.normalize,
        }
    )
    ds = load_dataset(spec, project=project, skip_bad_files=skip, **shape)
    model, _ = load_model_from_dir(run.path, project=project, device=dev, layout=layout)
    actual = identity_of(run.path, layout)
    if ds.num_classes > ds.model_outputs(model, spec=spec, record=record, device=dev):
        raise DataError(
            f"data '{spec}' has {ds.num_classes} classes, more than the model outputs",
            hint="evaluate on data with the classes the model was trained on",
        )
    ds.to(dev)
    result = evaluate(
        model,
        ds.x_test,
        ds.y_test,
        num_classes=ds.num_classes,
        batch_size=batch_size,
        classes=ds.classes,
    )
    recorded = record.get("data") or {}
    same = ds.fingerprint == recorded.get("fingerprint")
    name = (
        dataset_name(spec)
        if same
        else other_data_name(
            spec,
            ds.fingerprint,
            training=recorded.get("spec")
            or (train_cfg.data if train_cfg else recorded.get("name")),
        )
    )
    result.update(
        data={
            "name": name,
            "spec": spec,
            "fingerprint": ds.fingerprint,
            "split": "held-out",
            "same_as_training": same,
        },
        weights_sha256=actual,
        evaluated=now_iso(),
        device=str(dev),
    )
    # the training data's held-out result is eval.json (what the card reports as the model's);
    # other data never replaces it: evals/<dataset name>.json, shown under its own name
    path = run.eval if same else run.path / "evals" / f"{slug(name)}.json"
    result["path"] = str(path)
    if write:
        path.parent.mkdir(exist_ok=True)
        write_json_atomic(path, {k: v for k, v in result.items() if k != "path"})
    return result
