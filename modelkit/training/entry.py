"""One call for ``modelkit train``: it decides new run or resume, here or under torchrun.

:func:`run_training` takes a :class:`TrainRequest` (what the user asked for, flags and config
file alike) and picks one of four ways: train here (:func:`modelkit.training.loop.train`),
resume here (:func:`~modelkit.training.loop.resume`), or either under torchrun with N
processes per node (:func:`launch_train`, :func:`launch_resume`, which re-run
``modelkit train`` in every worker). Under torchrun every error names its rank.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, ModelkitError, RunDirError, WorldSizeMismatch
from modelkit.runs import RunRecord
from modelkit.runs.transaction import check_run_target, resolve_run_path
from modelkit.training import distributed as D
from modelkit.training.launch import LaunchConfig, launch, launch_device_type, validate_launch


@dataclass(frozen=True)
class TrainRequest:
    """What ``modelkit train`` was asked to do (``None``: not given)."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys from flags
    out: Path | None = None
    resume: Path | None = None
    fallback_checkpoint: bool = False
    overwrite: bool = False
    download: bool = False
    data_placement: str = "auto"
    launch: LaunchConfig | None = None  # None: no launch flag given (one process)
    worker_flags: tuple[str, ...] = ()  # output flags each torchrun worker repeats


@dataclass(frozen=True)
class TrainResult:
    """The run directory and its record (None when workers wrote it, or on ranks > 0)."""

    out: Path
    record: RunRecord | None = None
    resumed: bool = False
    already_complete: bool = False  # a resume found the run finished: nothing was done

    def notes(self) -> list[str]:
        """What a resume did, in words (nothing for a new run)."""
        if not self.resumed or self.record is None:
            return []
        if self.already_complete:
            return [f"{self.out} is already complete; nothing to resume"]
        last = self.record.last_resume
        if last is None:
            return []
        notes = [f"skipped corrupt checkpoint {name}: {why}" for name, why in last.rejected]
        where = last.checkpoint or "no checkpoint yet"
        return [*notes, f"resumed from step {last.from_step} ({where})"]


def run_training(
    request: TrainRequest, *, on_event: Callable[[dict[str, Any]], None] | None = None
) -> TrainResult:
    """Train or resume per ``request``, in this process or under torchrun."""
    try:
        return _run_training(request, on_event)
    except ModelkitError as exc:
        rank = worker_rank()
        if rank is not None:
            exc.with_context(f"[rank {rank}] ")
        raise
    except Exception as exc:
        rank = worker_rank()
        if rank is None or os.environ.get("MODELKIT_DEBUG", "") not in ("", "0"):
            raise
        first = (str(exc).splitlines() or [""])[0]
        raise ModelkitError(
            f"[rank {rank}] {type(exc).__name__}: {first}",
            hint="re-run with MODELKIT_DEBUG=1 for the traceback",
        ) from None


def worker_rank() -> int | None:
    """This process's rank under torchrun with more than one process (None otherwise)."""
    rank, size, _ = D.env_world()
    return rank if D.in_worker() and size > 1 else None


def _run_training(req: TrainRequest, on_event: Any) -> TrainResult:
    from modelkit.config import resolve_config
    from modelkit.project import load_project
    from modelkit.training.loop import RunOptions, train

    if req.launch is not None and D.in_worker():
        raise BadInputError(
            "already running under torchrun; --nproc-per-node/--nnodes are torchrun's flags here",
            hint="drop them, or use `modelkit train --nproc-per-node N` without torchrun",
        )
    if req.fallback_checkpoint and req.resume is None:
        raise BadInputError(
            "--fallback-checkpoint only applies with --resume",
            hint="modelkit train --resume RUN_DIR --fallback-checkpoint",
        )
    project = load_project()
    launching = req.launch is not None and req.launch.distributed
    options = replace(RunOptions.from_env(), data_placement=req.data_placement)
    worker_flags = [*req.worker_flags]
    if req.data_placement != "auto":
        worker_flags += ["--data-placement", req.data_placement]
    if req.resume is not None:
        _only_resume_flags(req)
        if launching:
            launch_resume(
                req.resume, req.launch, fallback=req.fallback_checkpoint, worker_flags=worker_flags
            )
            return TrainResult(req.resume, resumed=True)
        return _resume_here(req.resume, req, project=project, options=options, on_event=on_event)
    cfg = resolve_config(config_file=req.config_file, overrides=req.overrides, project=project)
    out = req.out or Path("runs") / (
        f"{cfg.model.replace(':', '-').replace('.', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if launching:
        if req.download:
            raise BadInputError(
                "--download cannot be combined with --nproc-per-node (every rank would download)",
                hint="download once with a single-process `modelkit train --download --epochs 1`",
            )
        launch_train(cfg, out, req.launch, overwrite=req.overwrite, worker_flags=worker_flags)
        return TrainResult(out)
    # a linked --out resolved (a dangling one refused) and checked before the data loads
    check_run_target(resolve_run_path(out), overwrite=req.overwrite, resume=False)
    record = train(
        cfg,
        out=out,
        project=project,
        overwrite=req.overwrite,
        download=req.download,
        on_event=on_event,
        options=options,
    )
    return TrainResult(out, _shown(_typed(record, out)))


def _resume_here(
    run_dir: Path, req: TrainRequest, *, project: Any, options: Any, on_event: Any
) -> TrainResult:
    """Resume ``run_dir`` in this process (nothing to do for a complete run)."""
    from modelkit.training.loop import completed_run, resume

    done = completed_run(run_dir)
    if done is not None:
        return TrainResult(run_dir, _shown(done), resumed=True, already_complete=True)
    record = resume(
        run_dir,
        project=project,
        fallback=req.fallback_checkpoint,
        on_event=on_event,
        options=options,
    )
    return TrainResult(run_dir, _shown(_typed(record, run_dir)), resumed=True)


def _typed(record: dict[str, Any], out: Path) -> RunRecord:
    """The returned record as run.json holds it (JSON types: lists, not tuples), typed."""
    return RunRecord.from_dict(json.loads(json.dumps(record)), source=str(out / "run.json"))


def _shown(record: RunRecord) -> RunRecord | None:
    """The record to show: rank 0's (or a single process's)."""
    return record if worker_rank() in (None, 0) else None


def _only_resume_flags(req: TrainRequest) -> None:
    """``--resume`` takes the run's own config: no config, out, overwrite or download flags."""
    given = [k for k, v in req.overrides.items() if v is not None]
    given += [
        name
        for name, value in (
            ("config", req.config_file),
            ("out", req.out),
            ("overwrite", req.overwrite),
            ("download", req.download),
        )
        if value
    ]
    if given:
        raise BadInputError(
            f"--resume takes the run's own config; --{given[0].replace('_', '-')} "
            "cannot be combined with it",
            hint=f"modelkit train --resume {req.resume}",
        )


def launch_train(
    cfg: Any, out: Path, launch_cfg: LaunchConfig, *, overwrite: bool, worker_flags: list[str]
) -> None:
    """Check what can be checked here, then run ``modelkit train`` workers under torchrun.

    Every rank trains exactly the resolved ``cfg`` (passed as a JSON config file).
    """
    from modelkit.training.sharding import check_config

    out = Path(out)
    check_config(cfg, world_size=launch_cfg.world_size)  # before any worker starts
    device_type = launch_device_type(cfg.device)
    launch_cfg = validate_launch(launch_cfg, device_type=device_type)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise RunDirError(
            f"--out {out} exists and is not empty",
            hint="pass --overwrite to replace it, or choose another --out",
        )
    tmp = Path(tempfile.mkdtemp(prefix="modelkit-launch-"))
    try:
        config_file = tmp / "config.json"
        config_file.write_text(json.dumps(cfg.to_dict(), sort_keys=True), encoding="utf-8")
        args = ["train", "--config", str(config_file), "--out", str(out)]
        args += (["--overwrite"] if overwrite else []) + worker_flags
        try:
            launch(launch_cfg, args, device_type=device_type, sharded=cfg.shard)
        except ModelkitError as exc:
            _resume_hint(exc, out, launch_cfg)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def launch_resume(
    run_dir: Path, launch_cfg: LaunchConfig, *, fallback: bool, worker_flags: list[str]
) -> None:
    """Resume a multi-process run at its recorded world size, under torchrun."""
    from modelkit.runs import live_dir, open_run

    run = open_run(live_dir(run_dir).path, require=("config.json",))
    recorded = run.run_record().world_size if run.record.is_file() else 1
    if recorded != launch_cfg.world_size:
        raise WorldSizeMismatch(recorded, launch_cfg.world_size, what=f"run {run_dir}")
    config = run.train_config()
    device_type = launch_device_type(config.device)
    launch_cfg = validate_launch(launch_cfg, device_type=device_type)
    args = ["train", "--resume", str(run_dir)] + (["--fallback-checkpoint"] if fallback else [])
    try:
        launch(launch_cfg, args + worker_flags, device_type=device_type, sharded=config.shard)
    except ModelkitError as exc:
        _resume_hint(exc, run_dir, launch_cfg)
        raise


def _resume_hint(exc: ModelkitError, out: Path, launch_cfg: LaunchConfig) -> None:
    """After a failed rank: name the intact checkpoint and the command that continues."""
    from modelkit.runs import live_dir
    from modelkit.runs.checkpoint import list_checkpoints

    ckpts = list_checkpoints(live_dir(out).checkpoints)
    if exc.exit_code == 1 and ckpts:
        exc.hint = (
            f"checkpoint {ckpts[-1].name} is intact; continue with: modelkit train --resume "
            f"{out} --nproc-per-node {launch_cfg.nproc_per_node}"
            + (f" --nnodes {launch_cfg.nnodes}" if launch_cfg.nnodes > 1 else "")
        )
