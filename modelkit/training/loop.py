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
from modelkit.errors import BadInputError, DataError, ModelkitError
from modelkit.runs import RunDir, now_iso
from modelkit.training import distributed as D
from modelkit.training.options import PERTURB_ENV, RunOptions
from modelkit.training.record import RunWriter, base_record

__all__ = ["PERTURB_ENV", "RunOptions", "resume", "train"]

Event = dict[str, Any]


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
    on_event: Callable[[Event], None] | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Train per ``config`` into the run directory ``out``; returns the run record.

    Under torchrun every rank calls this; rank 0 writes the run directory.
    """
    from modelkit.training.setup import setup

    options = options or RunOptions.from_env()
    s = setup(config, project=project, download=download, options=options)
    every = options.fingerprint_every
    writer = RunWriter(RunDir(Path(out)), enabled=False)
    error: BaseException | None = None
    if s.world.main:
        try:
            record = base_record(
                s,
                project=project,
                fingerprint_every=s.config.fingerprint_every if every is None else every,
            )
            if options.perturb:
                record["perturbed"] = options.perturb  # a test hook was active: never a real result
            writer = RunWriter.create(out, overwrite=overwrite, config=s.config, record=record)
        except Exception as exc:
            error = exc
    D.agree(s.world, error)
    return _run(s, writer, options, on_event)


@_worker_errors
def resume(
    run_dir: Path | str,
    *,
    project: Any = None,
    fallback: bool = False,
    on_event: Callable[[Event], None] | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Continue a killed run from its newest verified checkpoint; returns the run record.

    A corrupt newest checkpoint raises RunDirError unless ``fallback`` (then the previous good
    one is used and the rejected files are listed in ``run.json["resumes"]``). Metrics rows past
    the checkpoint are cut, so the finished run equals an uninterrupted one, bit for bit.
    A run resumes only at the world size (number of processes) it was started with.
    """
    from modelkit.env import diff_environments, environment
    from modelkit.training.checkpoint import find_resume_checkpoint, remove_stale_temps
    from modelkit.training.setup import setup
    from modelkit.training.state import restore

    options = options or RunOptions.from_env()
    writer = RunWriter.reopen(run_dir)
    run, record = writer.run, writer.record
    if record.get("status") == "complete" and run.weights.is_file():
        return {**record, "already_complete": True}
    rank, size, _ = D.env_world()
    recorded_world = int((record.get("distributed") or {}).get("world_size") or 1)
    if record and recorded_world != size:
        raise BadInputError(
            f"{run_dir} was trained by {recorded_world} process(es); this resume has {size}",
            hint=f"modelkit train --resume {run_dir}"
            + (f" --nproc-per-node {recorded_world}" if recorded_world > 1 else ""),
        )
    config = run.train_config()
    removed = remove_stale_temps(run.checkpoints) if rank == 0 else []
    path, tensors, meta, rejected = find_resume_checkpoint(run.checkpoints, fallback=fallback)
    # the recorded runtime choices win over the defaults, so the run continues as it started
    recorded_placement = (record.get("accel") or {}).get("data_placement")
    options = replace(
        options,
        threads=options.threads or record.get("determinism", {}).get("threads"),
        perturb=options.perturb or record.get("perturbed"),
        data_placement=recorded_placement
        if recorded_placement and options.data_placement == "auto"
        else options.data_placement,
    )
    s = setup(config, project=project, download=False, options=options)
    if record.get("data", {}).get("fingerprint") not in (None, s.data.fingerprint):
        raise DataError(
            f"data '{config.data}' now has fingerprint {s.data.fingerprint}, "
            f"the run started on {record['data']['fingerprint']}",
            hint="resume only on the data the run started with",
        )
    writer.enabled = s.world.main

    def restored(trainer: Any) -> None:
        if path is not None:
            restore(trainer, tensors, meta)
        if not s.world.main:
            return
        writer.truncate_metrics(trainer.state.step if path is not None else -1)
        if not writer.record:  # killed between config.json and run.json: rebuild the record
            writer.record = base_record(
                s, project=project, fingerprint_every=trainer.fingerprint_every
            )
        writer.record.setdefault("resumes", []).append(
            {
                "at": now_iso(),
                "from_step": trainer.state.step,
                "checkpoint": path.name if path is not None else None,
                "rejected_checkpoints": rejected,
                "removed_temp_files": removed,
                "env_diff": diff_environments(writer.record.get("env", {}), environment(s.device)),
            }
        )
        writer.record.update(status="running")
        writer.record.pop("error", None)
        writer.write()

    return _run(s, writer, options, on_event, before=restored)


def _run(
    s: Any,
    writer: RunWriter,
    options: RunOptions,
    on_event: Callable[[Event], None] | None,
    *,
    before: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Fit, then finish the run: complete, stopped (a repro prefix) or failed."""
    from modelkit.training.trainer import KEEP_ALL, Trainer

    trainer = Trainer(s, writer=writer, options=options, emit=on_event or (lambda _e: None))
    if before is not None:
        before(trainer)
    world = s.world
    trainer.emit(
        {
            "kind": "start",
            "total_steps": trainer.total_steps,
            "device": str(trainer.device),
            "run_dir": str(writer.run.path),
            "step": trainer.state.step,
        }
    )
    try:
        status = trainer.fit()
        if status == "complete" and options.dump_dir is not None:
            trainer.save(options.dump_dir, keep=KEEP_ALL)  # the final state, for repro
    except BaseException as exc:
        if world.distributed:
            D.mark_failing()  # a SIGTERM from torchrun must not cut the record short
            if not isinstance(exc, ModelkitError) and D.is_peer_failure(exc):
                exc = D.peer_failure(exc)
        writer.fail(str(exc) if isinstance(exc, ModelkitError) else f"{type(exc).__name__}: {exc}")
        if isinstance(exc, D.PeerFailure):
            raise exc from None
        raise
    if not world.main:
        D.leave(world)
        return {"distributed": world.record(), "rank": world.rank, "status": status}
    if status == "stopped":
        record = writer.stopped(trainer.state.step)
        D.leave(world)
        return record
    record = writer.finish(trainer, load_s=s.load_s)
    D.leave(world)
    trainer.emit({"kind": "end", "record": record})
    return record
