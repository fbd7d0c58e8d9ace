"""``modelkit repro``: prove a run reproducible, or show where and how it is not.

Two modes:

* :func:`repro_twice` trains the same config twice in fresh processes (determinism on) and
  compares the final state sha256 (params, buffers, optimizer state), the per-step
  fingerprints and the metrics. On a mismatch it localises the first divergent step: the
  window between the last equal and the first different fingerprint is re-run on both sides
  with a fingerprint (and a state dump) at every step, and the tensors that differ at the
  first different step are named with their max abs diff and max ULP distance
  (:mod:`modelkit.repro.diverge`).
* :func:`~modelkit.repro.against.repro_against` regenerates a recorded run from its
  ``config.json``/``run.json`` and compares it with the recorded fingerprints and weights.

Both return a typed report (:mod:`modelkit.repro.report`; ``to_dict()`` is the JSON
``modelkit repro --format json`` writes); ``report.identical`` is the verdict. Every process they
start is owned by a :class:`~modelkit.repro.procs.Workspace` (own process group, signals
forwarded, killed and cleaned up on exit).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, ModelkitError
from modelkit.repro.command import recorded_command, repro_command
from modelkit.repro.diverge import Event, compare_sides, control_report, worker_rerun
from modelkit.repro.hooks import PERTURB_ENV
from modelkit.repro.payloads import WorkerOptions
from modelkit.repro.procs import Workspace
from modelkit.repro.report import ReproTimings, TwiceReport
from modelkit.repro.sides import (
    Job,
    check_world,
    recorded_threads,
    recorded_world,
    run_workers,
)
from modelkit.runs.layout import RunDir

CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def load_target(target: Path, *, project: Any = None) -> tuple[Any, str]:
    """A config file or a run directory -> ``(TrainConfig, kind)``."""
    from modelkit.config import resolve_config
    from modelkit.runs import open_run

    if target.is_dir():
        return open_run(target, require=("config.json",)).train_config(), "run"
    if target.is_file() and target.suffix in CONFIG_SUFFIXES:
        return resolve_config(config_file=target, project=project), "config"
    raise BadInputError(
        f"{target} is neither a config file (.toml/.yaml/.json) nor a run directory",
        hint="modelkit repro configs/mnist.toml, or modelkit repro runs/my-run",
    )


def repro_twice(
    target: Path,
    *,
    steps: int | None = None,
    control: bool = False,
    work_dir: Path | None = None,
    project: Any = None,
    on_event: Event | None = None,
    nproc_per_node: int | None = None,
) -> TwiceReport:
    """Train ``target`` (config file or run dir) twice in fresh processes and compare.

    ``MODELKIT_PERTURB=STEP:PARAM`` (a test hook) nudges the second run only.
    ``nproc_per_node`` > 1 runs each side under torchrun (DDP); a run directory's recorded
    world size is the default. Both sides use the same world size, so bitwise equality holds.
    """
    emit = on_event or (lambda _m: None)
    if target.is_dir() and _own_loop_run(target):  # trained by its own loop: run its command
        return _twice_from_record(
            target, steps=steps, control=control, work_dir=work_dir, emit=emit, world=nproc_per_node
        )
    config, kind = load_target(target, project=project)
    config = config.replace(deterministic=True)
    if steps is not None and steps < 1:
        raise BadInputError("--steps must be >= 1", hint="e.g. --steps 100")
    perturb = os.environ.get(PERTURB_ENV) or None
    opts, world = _twice_options(target, kind, config, steps=steps, world=nproc_per_node)
    with Workspace(work_dir) as ws:
        t0 = time.perf_counter()
        jobs = _twice_jobs(config, opts, world, perturb=perturb, control=control, emit=emit)
        sides = run_workers(jobs, workspace=ws)
        a, b = sides[0], sides[1]
        checked = time.perf_counter() - t0
        rerun = worker_rerun(config, perturb_b=perturb, workspace=ws, tag="l")
        compared = compare_sides(a, b, up_to=steps, rerun=rerun, emit=emit)
        record = a.record()
        report = TwiceReport(
            **compared.fields(),
            mode="twice",
            target=str(target),
            target_kind=kind,
            config_sha256=config.digest(),
            perturbed=perturb,
            env=record.env,
            determinism=record.determinism,
            distributed=record.distributed,
        )
        if control:
            rerun = worker_rerun(config, perturb_b=None, workspace=ws, tag="lc")
            ctrl = compare_sides(a, sides[2], up_to=steps, rerun=rerun, emit=emit)
            report = replace(report, control=control_report(config.seed + 1, ctrl))
        total = round(time.perf_counter() - t0, 3)
        timings = ReproTimings(runs_s=round(checked, 3), total_s=total)
        return replace(report, timings=timings, work_dir=str(ws.path) if ws.keep else None)


def _twice_jobs(
    config: Any, opts: WorkerOptions, world: int, *, perturb: str | None, control: bool, emit: Event
) -> list[Job]:
    """Runs a and b (b perturbed by the test hook, if asked) and the control (seed + 1)."""
    seed = config.seed + 1
    jobs = [
        Job(config, "a", opts, world),
        Job(config, "b", replace(opts, perturb=perturb), world),
    ]
    if control:
        jobs.append(Job(config.replace(seed=seed), "control", opts, world))
        emit(f"training runs a, b and a control (seed {seed}), each in a fresh process")
    else:
        emit("training runs a and b, each in a fresh process")
    return jobs


def _twice_options(
    target: Path, kind: str, config: Any, *, steps: int | None, world: int | None
) -> tuple[WorkerOptions, int]:
    """The workers' options (where to stop, a run's thread count) and the world size."""
    world = world or (recorded_world(target) if kind == "run" else 1)
    check_world(world, config)
    # a recorded run: reuse its thread count (reduction order)
    threads = recorded_threads(target) if kind == "run" else None
    return WorkerOptions(stop_at_step=steps, dump_steps=[0], threads=threads), world


def _own_loop_run(run_dir: Path) -> bool:
    """Whether a run directory was written by the user's own loop (no modelkit.train config)."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        return False
    try:
        return run.run_config().own_loop
    except ModelkitError:  # unreadable: load_target names the problem
        return False


def _twice_from_record(
    run_dir: Path,
    *,
    steps: int | None,
    control: bool,
    work_dir: Path | None,
    emit: Event,
    world: int | None,
) -> TwiceReport:
    """``repro RUN_DIR`` for a user-loop run: its recorded command, twice, deterministic."""
    from modelkit.runs import open_run

    record = open_run(run_dir, require=("run.json", "config.json")).run_record()
    if steps is not None or world is not None:
        raise BadInputError(
            f"{run_dir} was trained by its own loop: --steps/--nproc-per-node cannot be applied "
            "to its command",
            hint=f"modelkit repro {run_dir}",
        )
    found = recorded_command(record)
    if found is None:
        raise BadInputError(
            f"{run_dir} was trained by its own loop and records no command that can be run again",
            hint="run the command through `modelkit repro -- CMD [ARGS...]`",
        )
    argv, cwd = found
    if not cwd.is_dir():
        raise BadInputError(
            f"{run_dir} was made in {cwd}, which does not exist here",
            hint="modelkit repro -- CMD [ARGS...] from a checkout of that repository",
        )
    report = repro_command(
        argv, cwd=cwd, control=control, deterministic=True, work_dir=work_dir, on_event=emit
    )
    return replace(report, target=str(run_dir), target_kind="run")
