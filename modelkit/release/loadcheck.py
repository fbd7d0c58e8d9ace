"""The load checks of a verification: the model rebuilt on ``meta`` with every shard loaded
into it (one shard in memory at a time), and the optional re-evaluation of the whole model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelkit.data.batches import BatchSource
from modelkit.errors import BadInputError, CheckFailed, ModelkitError, NotImportable
from modelkit.release.reports import EvalCheck
from modelkit.runs import EvalRecord, RunDir, read_eval_record
from modelkit.tasks import task_of
from modelkit.weights import read_layout


@contextlib.contextmanager
def _as_load_failure(target: Any, version: str) -> Iterator[None]:
    """A model that cannot be rebuilt here is exit 2 (the release may be fine); weights that
    do not load into it are a failed check (exit 3)."""
    where = f"{target.describe()}@{version}"
    default = "the release's config.json and its weights disagree"
    try:
        yield
    except NotImportable as exc:
        raise BadInputError(
            f"{where}: every hash matches, but the model cannot be rebuilt here: {exc.message}",
            hint=exc.hint,
        ) from None
    except ModelkitError as exc:
        raise CheckFailed(
            f"{where}: the weights do not load: {exc.message}", hint=exc.hint or default
        ) from None
    except Exception as exc:
        raise CheckFailed(f"{where}: the weights do not load: {exc}", hint=default) from None


def import_load_check() -> None:
    """Import what the load check needs (torch, the model builders) ahead of it: it reads no
    weights, so a verification does it while the files are being hashed. A failure is left
    to :func:`check_loads`, which imports them again and reports it in its place."""
    with contextlib.suppress(Exception):  # reported by check_loads, in its place
        import modelkit.models.weights  # noqa: F401 - torch and the model builders


def check_loads(target: Any, version: str, snapshot: Path, *, project: Any, log: list[str]) -> int:
    """Build the model on ``meta`` and load every shard into it, one at a time; returns the
    number of parameters that loaded."""
    from modelkit.models.weights import check_model_loads

    with _as_load_failure(target, version):
        layout = read_layout(snapshot)
        model, _, name = check_model_loads(snapshot, layout, project=project)
    shards = f"{len(layout.headers)} shards" if layout.index else layout.files[0]
    log.append(f"the model rebuilds from {name} and the weights load (strict, {shards})")
    return sum(p.numel() for p in model.parameters())


def load_whole(target: Any, version: str, snapshot: Path, *, project: Any) -> Any:
    from modelkit.models.weights import load_model_from_dir

    with _as_load_failure(target, version):
        return load_model_from_dir(snapshot, project=project, layout=read_layout(snapshot))[0]


def re_evaluate(snapshot: Path, model: Any, *, project: Any) -> EvalCheck:
    """Evaluate the downloaded weights on the run's data by the run's task; must reproduce the
    released evaluation's primary metric (accuracy, perplexity, ...)."""
    import math

    from modelkit.release.package import evaluation_files
    from modelkit.training.evaluate import (
        _tensor_batches,
        accumulate,
        eval_transform,
        load_eval_data,
    )

    files = evaluation_files(snapshot)  # eval.json first; else the first evals/*.json
    if not files:
        raise CheckFailed(
            "cannot re-evaluate: the release holds no evaluation", hint="verify without --eval"
        )
    recorded = read_eval_record(files[0])
    record = RunDir(snapshot).run_record()
    task = task_of(record)
    spec, train = _eval_spec(snapshot, recorded)
    ds = load_eval_data(
        spec, project=project, record=record, train_cfg=train, skip=False, batch_size=1024
    )
    batches = (
        ds.batches() if isinstance(ds, BatchSource) else _tensor_batches(ds.x_test, ds.y_test, 1024)
    )
    acc = accumulate(
        model, batches, task=task, acc=task.accumulator(ds), transform=eval_transform(record, model)
    )
    if ds.fingerprint != recorded.data.fingerprint:
        raise CheckFailed(
            f"data '{spec}' here has fingerprint {ds.fingerprint[:19]}…, the release was "
            f"evaluated on {str(recorded.data.fingerprint)[:19]}…",
            hint="re-evaluation needs the same data",
        )
    key = task.primary.key
    released = recorded.metric(key)
    if released is None:
        raise CheckFailed(
            f"cannot re-evaluate: {files[0].name} records no {key}", hint="verify without --eval"
        )
    value = float(acc.summary()[key])
    if not math.isclose(value, released, rel_tol=1e-6, abs_tol=1e-9):
        raise CheckFailed(
            f"re-evaluated {key} {value:.6f} != released {released:.6f}",
            hint="the weights or the evaluation code changed",
        )
    return EvalCheck(
        metric=key,
        value=value,
        recorded=released,
        spec=spec,
        file=files[0].relative_to(snapshot).as_posix(),
    )


def _eval_spec(snapshot: Path, recorded: EvalRecord) -> tuple[str, Any]:
    """The data spec the release was evaluated on, and its training config (None: own loop)."""
    run = RunDir(snapshot)
    train = None if run.run_config().own_loop else run.train_config()
    spec = recorded.data.spec or (train.data if train is not None else None)
    if not spec:
        raise CheckFailed(
            "cannot re-evaluate: the release does not record which data it was evaluated on",
            hint="verify without --eval",
        )
    return spec, train
