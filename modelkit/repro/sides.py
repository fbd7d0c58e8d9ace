"""The sides ``repro`` compares: a worker run in a fresh process (:func:`run_workers`) and what
it left behind (:class:`Side`: its run directory, state dumps and wall time)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, ModelkitError
from modelkit.repro.hooks import PERTURB_ENV, RESULT_FILE
from modelkit.repro.payloads import (
    StateResult,
    WorkerError,
    WorkerOptions,
    WorkerSpec,
    read_payload,
    write_payload,
)
from modelkit.repro.procs import Workspace
from modelkit.runs.layout import RunDir
from modelkit.runs.record import MetricRow, RunRecord
from modelkit.training.launch import LaunchConfig, launch_device_type, validate_launch


@dataclass(frozen=True)
class Job:
    """A worker to run: ``config`` trained with ``options`` into ``label``, by ``nproc``
    processes (torchrun + DDP when more than one)."""

    config: Any
    label: str
    options: WorkerOptions
    nproc: int = 1


@dataclass
class Side:
    """One finished worker run: its run directory, state dumps and wall time."""

    label: str
    run_dir: Path
    dump_dir: Path
    seconds: float

    def record(self) -> RunRecord:
        """The worker's run.json."""
        return RunDir(self.run_dir).run_record()

    def metrics(self) -> list[MetricRow]:
        """The worker's metrics rows."""
        return RunDir(self.run_dir).metric_rows()

    def dump(self, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(tensors, meta)`` of the state dumped at ``step``."""
        from modelkit.training.checkpoint import PREFIX, SUFFIX, load_checkpoint

        return load_checkpoint(self.dump_dir / f"{PREFIX}{step:08d}{SUFFIX}")

    def result(self) -> StateResult:
        """What the worker computed itself: the final state sha256 and step."""
        path = Path(f"{self.run_dir}.result.json")
        if not path.is_file():  # a command's run: written by its start_run hooks
            path = self.dump_dir / RESULT_FILE
        return read_payload(StateResult, path)

    def has_dump(self, step: int) -> bool:
        """Whether a state dump exists for ``step``."""
        from modelkit.training.checkpoint import PREFIX, SUFFIX

        return (self.dump_dir / f"{PREFIX}{step:08d}{SUFFIX}").is_file()


def recorded_threads(run_dir: Path) -> int | None:
    """The thread count a recorded run used (run.json determinism, else env), if known."""
    run = RunDir(run_dir)
    if not run.record.is_file():
        return None
    record = run.run_record()
    return record.determinism.threads or record.env.threads


def recorded_world(run_dir: Path) -> int:
    """The number of processes a recorded run trained with (1 for older records)."""
    run = RunDir(run_dir)
    if not run.record.is_file():
        return 1
    return run.run_record().world_size or 1


def run_worker(job: Job, *, workspace: Workspace) -> Side:
    """Train a job in a fresh Python process; typed errors come back as typed errors."""
    return run_workers([job], workspace=workspace)[0]


def run_workers(jobs: list[Job], *, workspace: Workspace) -> list[Side]:
    """Run jobs, each in its own fresh process, side by side.

    Running them concurrently does not change their results (thread count, seeds and data
    order are fixed per process); it only shortens the wall time. Multi-process (torchrun)
    jobs run one after another: two launchers at once race for rendezvous ports and
    oversubscribe the cores. Every process is owned by ``workspace`` (its own process group).
    """
    env = {k: v for k, v in os.environ.items() if k != PERTURB_ENV}
    started: list[tuple[str, Path, Path, Any, float]] = []
    for job in jobs:
        out, dump = workspace.path / job.label, workspace.path / f"{job.label}.state"
        cmd, job_env = _worker_command(job, workspace.path, env)
        proc = workspace.spawn(
            cmd, env=job_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        t0 = time.perf_counter()
        if job.nproc > 1:
            _, stderr = proc.communicate()  # finished before the next job starts
            proc = _Done(proc.returncode, stderr, time.perf_counter())
        started.append((job.label, out, dump, proc, t0))
    sides, failure = [], None
    for label, out, dump, proc, t0 in started:
        _, stderr = proc.communicate()
        end = proc.finished if isinstance(proc, _Done) else time.perf_counter()
        sides.append(Side(label, out, dump, end - t0))
        if proc.returncode != 0 and failure is None:
            failure = _worker_error(label, out, proc.returncode, stderr)
    if failure is not None:
        raise failure
    return sides


def _worker_command(
    job: Job, workspace: Path, env: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The worker's spec file (written) and its command line and environment."""
    out, dump = workspace / job.label, workspace / f"{job.label}.state"
    spec = workspace / f"{job.label}.spec.json"
    options = replace(job.options, dump_dir=str(dump))
    write_payload(WorkerSpec(config=job.config.to_dict(), out=str(out), options=options), spec)
    if job.nproc == 1:
        return [sys.executable, "-m", "modelkit.repro.worker", str(spec)], env
    # the same worker under torchrun: DDP, rank 0 writes the run
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += [f"--nproc-per-node={job.nproc}", "--max-restarts=0"]
    return (
        [*launcher, "-m", "modelkit.repro.worker", str(spec)],
        {"OMP_NUM_THREADS": "1", **env},
    )


@dataclass
class _Done:
    """A finished process, answering ``communicate`` like a running one."""

    returncode: int
    stderr: str
    finished: float

    def communicate(self) -> tuple[None, str]:
        return None, self.stderr


def _worker_error(label: str, out: Path, code: int, stderr: str) -> ModelkitError:
    files = [Path(f"{out}.error.json"), *sorted(out.parent.glob(f"{out.name}.error.rank*.json"))]
    errors = [read_payload(WorkerError, f) for f in files if f.is_file()]
    errors.sort(key=lambda e: e.secondary)  # a rank stopped by another: last
    if errors:
        err = errors[0]
        cls = BadInputError if err.exit_code == 2 else ModelkitError
        return cls(f"run {label}: {err.message}", hint=err.hint)
    # the last line that says something (torchrun's report ends in a '=====' rule)
    said = [line.strip() for line in stderr.splitlines() if any(c.isalnum() for c in line)]
    tail = said[-1] if said else "(no output)"
    return ModelkitError(
        f"run {label} failed (exit {code}): {tail}",
        hint="re-run with MODELKIT_DEBUG=1, or train the config with `modelkit train`",
    )


def check_world(world: int, config: Any) -> None:
    """Refuse a world size this machine cannot run (before any process starts)."""
    if world < 1:
        raise BadInputError("--nproc-per-node must be >= 1", hint="e.g. --nproc-per-node 2")
    if world > 1:
        validate_launch(
            LaunchConfig(nproc_per_node=world), device_type=launch_device_type(config.device)
        )
