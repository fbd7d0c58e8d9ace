"""Train a model into a run directory, or continue a killed run: the built-in trainer's API.

``train(config, out=...)`` writes a complete run directory (see modelkit.runs) and returns
the run record; ``resume(run_dir)`` continues a killed run from its newest good checkpoint
and ends bitwise identical to an uninterrupted run. Neither prints: progress goes to the
optional ``on_event`` callback. Under torchrun every rank calls them; rank 0 writes.

Where things are (one file per concern, torchtune style):

- :mod:`~modelkit.training.setup`: determinism, data, model, optimizer, schedule (``setup``);
- :mod:`~modelkit.training.trainer`: the loop and its one step (``Trainer.fit``/``step``);
- :mod:`~modelkit.training.state`: what a checkpoint holds (built and restored in one place);
- :mod:`~modelkit.training.record`: every write to the run directory, and how a run ends;
- :mod:`~modelkit.training.optim`, :mod:`~modelkit.training.losses`: the recipe's parts;
- :mod:`~modelkit.training.distributed` / :mod:`~modelkit.training.launch`: DDP, torchrun.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelkit.config import TrainConfig
from modelkit.errors import DataError, ModelkitError, WorldSizeMismatch
from modelkit.runs import RunRecord, live_dir, open_run
from modelkit.training import distributed as D
from modelkit.training import sharding
from modelkit.training.events import ProgressEvent
from modelkit.training.options import PERTURB_ENV, RunOptions
from modelkit.training.record import RunWriter
from modelkit.weights.layout import has_weights

__all__ = ["PERTURB_ENV", "RunOptions", "resume", "train"]


def _worker_errors(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Under torchrun, write a failing rank's error where the launcher reads it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            if D.in_worker():
                D.write_error_file(exc, D.World(*D.env_world()[:2]))
            raise

    return wrapper


@_worker_errors
def train(
    config: TrainConfig,
    *,
    out: Path | str,
    project: Any = None,
    overwrite: bool = False,
    download: bool = False,
    on_event: Callable[[ProgressEvent], None] | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Train per ``config`` into the run directory ``out``; returns the run record.

    Under torchrun every rank calls this; rank 0 writes the run directory.
    """
    from modelkit.training.setup import setup

    options = options or RunOptions.from_env()
    s = setup(config, project=project, download=download, options=options)
    every = (
        s.config.fingerprint_every
        if options.fingerprint_every is None
        else options.fingerprint_every
    )
    writer, error = RunWriter(), None
    if s.world.main:
        # a test hook was active: never a real result
        extra = {"perturbed": options.perturb} if options.perturb else {}
        try:
            writer = RunWriter.start(
                out, s, project=project, fingerprint_every=every, overwrite=overwrite, extra=extra
            )
        except Exception as exc:
            error = exc
    D.agree(s.world, error)
    return _run(s, writer, options, on_event, out=Path(out))


@_worker_errors
def resume(
    run_dir: Path | str,
    *,
    project: Any = None,
    fallback: bool = False,
    on_event: Callable[[ProgressEvent], None] | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Continue a killed run from its newest verified checkpoint; returns the run record.

    A corrupt newest checkpoint raises RunDirError unless ``fallback`` (then the previous good
    one is used and the rejected files are listed in ``run.json["resumes"]``). Metrics rows past
    the checkpoint are cut, so the finished run equals an uninterrupted one, bit for bit.
    A run resumes only at the world size (number of processes) it was started with.
    """
    from modelkit.runs import open_run
    from modelkit.training.setup import setup

    options = options or RunOptions.from_env()
    live = open_run(live_dir(run_dir).path, require=("config.json",))
    rec = live.run_record() if live.record.is_file() else None
    if _complete(live, rec):
        return {**rec.raw, "already_complete": True}
    _, size, _ = D.env_world()
    if rec is not None and rec.world_size != size:
        raise WorldSizeMismatch(rec.world_size, size, what=f"run {run_dir}")
    config = live.train_config()
    s = setup(config, project=project, download=False, options=_recorded(options, rec))
    recorded = rec.data_fingerprint if rec is not None else None
    if recorded not in (None, s.data.fingerprint):
        raise DataError(
            f"data '{config.data}' now has fingerprint {s.data.fingerprint}, "
            f"the run started on {recorded}",
            hint="resume only on the data the run started with",
        )
    writer, error = RunWriter(), None
    if s.world.main:
        every = (rec.fingerprint_every if rec is not None else None) or config.fingerprint_every
        try:
            writer = RunWriter.start(
                run_dir, s, project=project, fingerprint_every=every, resume=True
            )
        except Exception as exc:
            error = exc
    D.agree(s.world, error)  # rank 0 has the run (and its staging directory) from here on
    return _run(s, writer, options, on_event, out=Path(run_dir), fallback=fallback)


def _recorded(options: RunOptions, rec: Any) -> RunOptions:
    """The recorded runtime choices win over the defaults, so the run continues as it started."""
    if rec is None:
        return options
    placement = rec.data_placement
    return replace(
        options,
        threads=options.threads or rec.threads,
        perturb=options.perturb or rec.perturbed,
        data_placement=placement
        if placement and options.data_placement == "auto"
        else options.data_placement,
    )


def _restore(trainer: Any, writer: RunWriter, out: Path, *, fallback: bool) -> None:
    """Every rank loads the newest verified checkpoint (checked to fit first); rank 0's run
    then cuts the metrics after it and records the resume."""
    from modelkit.runs import Checkpoint
    from modelkit.training.state import restore

    session = writer.run
    directory = session.dir.checkpoints if session is not None else live_dir(out).checkpoints
    if trainer.sharded:  # its shards verified on every rank too
        from modelkit.training.sharded_checkpoint import latest_sharded

        ckpt, rejected = latest_sharded(trainer.world, directory, fallback=fallback)
    else:
        ckpt, rejected = Checkpoint.latest(directory, fallback=fallback)
    if ckpt is not None:
        restore(trainer, ckpt)
    if session is not None:
        session.resumed_from(ckpt, rejected)


def completed_run(run_dir: Path) -> RunRecord | None:
    """The record of a run that is complete already (nothing to resume), else None."""
    live = open_run(live_dir(run_dir).path, require=("config.json",))
    rec = live.run_record() if live.record.is_file() else None
    return rec if _complete(live, rec) else None


def _complete(live: Any, rec: RunRecord | None) -> bool:
    return rec is not None and rec.complete and has_weights(live.path)  # either layout


def _final_weights(trainer: Any, s: Any, writer: RunWriter) -> tuple[Any, dict[str, Any]]:
    """``(the weights already saved, or None: finish saves the model; run.json extras)``. A
    sharded model's weights are gathered and written file by file here (rank 0 writes, the
    others gather in step). A multi-process run records every rank's peak memory
    (``peak_memory_per_rank``, the final write included). Collective."""

    world = trainer.world
    if not world.distributed:
        return None, {}
    saved = None
    extra: dict[str, Any] = {}
    if trainer.sharded:
        saved = _write_sharded_weights(trainer, writer)
        extra["sharding"] = {
            "strategy": "fsdp2",
            "units": s.fsdp_units,
            **s.fsdp_init,
        }
    extra["peak_memory_per_rank"] = D.all_gather_json(sharding.peak_memory(trainer.device), world)
    return saved, extra


def _write_sharded_weights(trainer: Any, writer: RunWriter) -> Any:
    """Rank 0 writes the final weights into its staging run, one gathered file at a time; the
    other ranks gather in step. Every rank ends with rank 0's outcome (its error, if any)."""
    world, limit = trainer.world, trainer.config.max_shard_size
    if not world.main:
        sharding.drain_weights(trainer.model, world, limit)
        return None
    saved, error = None, None
    try:
        source = sharding.GatheredWeights(trainer.model, world)
        saved = writer.save_weights(source, max_shard_size=limit)
    except Exception as exc:
        error = exc
    D.agree(world, error)
    return saved


def _run(
    s: Any,
    writer: RunWriter,
    options: RunOptions,
    on_event: Callable[[ProgressEvent], None] | None,
    *,
    out: Path,
    fallback: bool | None = None,
) -> dict[str, Any]:
    """Fit (after restoring a checkpoint when resuming), then finish, stop or fail the run."""
    from modelkit.training.trainer import Trainer

    trainer = Trainer(s, writer=writer, options=options, emit=on_event or (lambda _e: None))
    world = s.world
    try:
        if fallback is not None:
            _restore(trainer, writer, out, fallback=fallback)
        trainer.emit(
            ProgressEvent(
                kind="start",
                task=trainer.task.name,
                total_steps=trainer.total_steps,
                device=str(trainer.device),
                run_dir=str(out),
                step=trainer.state.step,
            )
        )
        status = trainer.fit()
        if status == "complete" and options.dump_dir is not None:
            trainer.dump(options.dump_dir)  # the final state, for repro
    except BaseException as exc:
        if world.distributed:
            D.mark_failing()  # a SIGTERM from torchrun must not cut the record short
            if not isinstance(exc, ModelkitError) and D.is_peer_failure(exc):
                exc = D.peer_failure(exc)
        writer.fail(exc)
        if isinstance(exc, D.PeerFailure):
            raise exc from None
        raise
    saved, extra = _final_weights(trainer, s, writer)  # collective for a sharded model
    if not world.main:
        D.leave(world)
        return {"distributed": world.record(), "rank": world.rank, "status": status}
    record = writer.finish(
        trainer, load_s=s.load_s, stopped=status == "stopped", saved=saved, extra=extra
    )
    D.leave(world)
    if status == "complete":
        trainer.emit(ProgressEvent(kind="end", step=trainer.state.step, record=record))
    return record
