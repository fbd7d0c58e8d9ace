"""``modelkit repro --against RUN``: regenerate a recorded run from its record and compare it
with the recorded weights, after diffing the environment."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelkit.env import diff_environments
from modelkit.errors import BadInputError, DataError, NoWeights, RunDirError
from modelkit.repro.command import describe, recorded_command, run_commands
from modelkit.repro.diverge import Event
from modelkit.repro.hooks import DETERMINISTIC_ENV
from modelkit.repro.payloads import WorkerOptions
from modelkit.repro.procs import Workspace
from modelkit.repro.records import fingerprints, first_divergence
from modelkit.repro.report import (
    AgainstReport,
    DataFingerprints,
    EnvChange,
    ReproTimings,
    TensorDiff,
    ToleranceRow,
    WeightsShas,
)
from modelkit.repro.sides import (
    Job,
    Side,
    check_world,
    recorded_threads,
    recorded_world,
    run_worker,
)
from modelkit.runs.record import RunRecord
from modelkit.weights import has_weights, read_layout, verified_weights
from modelkit.weights.load import read_state_dict


def repro_against(
    run_dir: Path,
    *,
    steps: int | None = None,
    atol: float = 1e-4,
    work_dir: Path | None = None,
    project: Any = None,
    on_event: Event | None = None,
    nproc_per_node: int | None = None,
) -> AgainstReport:
    """Regenerate a recorded run from its record and compare with the recorded weights.

    The world size (processes) comes from the record; ``nproc_per_node`` may ask for another
    one, and then, like any environment difference that matters, the verdict is a measured
    tolerance, never bitwise equality (DDP sums gradients in a different order).

    The environment is diffed first; when a field that matters differs, the verdict is a
    tolerance comparison (max abs diff per tensor <= ``atol``), never bitwise equality.
    A data fingerprint mismatch raises DataError naming both fingerprints.
    """
    from modelkit.runs import open_run

    emit = on_event or (lambda _m: None)
    run = open_run(run_dir, require=("run.json", "config.json"))
    record = run.run_record()
    if not record.complete:
        raise RunDirError(
            f"{run_dir} is not a complete run (status {record.status!r})",
            hint=f"finish it first: modelkit train --resume {run_dir}",
        )
    if not has_weights(run.path):  # either layout (checked when the weights are compared)
        raise NoWeights(run.path)
    total = int(record.steps or 0)
    own_loop = run.run_config().own_loop
    if own_loop and (steps is not None or nproc_per_node is not None):
        raise BadInputError(
            f"{run_dir} was trained by its own loop: --steps/--nproc-per-node cannot be applied "
            "to its command",
            hint=f"modelkit repro --against {run_dir}",
        )
    if steps is not None and not 1 <= steps <= total:
        raise BadInputError(
            f"--steps {steps} is outside the recorded run's 1..{total} steps",
            hint=f"pass --steps between 1 and {total}",
        )
    with Workspace(work_dir) as ws:
        t0 = time.perf_counter()
        if own_loop:
            side = _regenerate_command(run_dir, record, workspace=ws, emit=emit)
        else:
            side = _regenerate_builtin(
                run, record, steps=steps, nproc_per_node=nproc_per_node, ws=ws, emit=emit
            )
        report = _against_report(run, record, side, steps=steps, total=total, atol=atol)
        return replace(
            report,
            timings=ReproTimings(total_s=round(time.perf_counter() - t0, 3)),
            work_dir=str(ws.path) if ws.keep else None,
        )


def _regenerate_command(
    run_dir: Path, record: RunRecord, *, workspace: Workspace, emit: Event
) -> Side:
    """Run a user-loop run's recorded command again into a fresh run directory."""

    found = recorded_command(record)
    if found is None:
        raise BadInputError(
            f"{run_dir} was trained by its own loop and records no command that can be run again",
            hint="make the run with a script (python train.py ...) or through "
            "`modelkit repro -- CMD --work-dir DIR`, then repro --against it",
        )
    argv, cwd = found
    if not cwd.is_dir():
        raise BadInputError(
            f"{run_dir} was made in {cwd}, which does not exist here",
            hint=f"run `{describe(argv)}` from a checkout of that repository, "
            "then compare with modelkit repro --against",
        )
    env: dict[str, str] = {}
    if record.determinism.enabled:
        env[DETERMINISTIC_ENV] = "1"
    emit(f"running the recorded command again: `{describe(argv)}` (in {cwd})")
    (side,) = run_commands([("regen", env)], argv=argv, cwd=cwd, workspace=workspace)
    recorded = record.data_fingerprint
    now = side.record().data_fingerprint
    if recorded not in (None, "unknown") and now != recorded:
        raise DataError(
            f"the command now trains on data with fingerprint {now}, the run recorded {recorded}",
            hint="regenerate on the recorded data",
        )
    return side


def _regenerate_builtin(
    run: Any,
    record: RunRecord,
    *,
    steps: int | None,
    nproc_per_node: int | None,
    ws: Workspace,
    emit: Event,
) -> Side:
    """Train a modelkit-train run's recorded config again in a fresh process."""
    run_dir = run.path
    config = run.train_config()
    threads = recorded_threads(run_dir)
    world = nproc_per_node or recorded_world(run_dir)
    check_world(world, config)
    emit("regenerating the recorded run in a fresh process")
    opts = WorkerOptions(
        stop_at_step=steps,
        threads=threads,
        force_deterministic=True,
        fingerprint_every=record.fingerprint_every,
        expect_data_fingerprint=record.data_fingerprint,
        dump_steps=[0],
    )
    if world > 1:
        emit(f"with {world} processes (torchrun, DDP)")
    return run_worker(Job(config, "regen", opts, nproc=world), workspace=ws)


def _against_report(
    run: Any, record: RunRecord, side: Side, *, steps: int | None, total: int, atol: float
) -> AgainstReport:
    """Compare a regenerated run with the recorded one (env diff first)."""
    new = side.record()
    env_diff = _env_diff(record, new)
    matters = [d for d in env_diff if d.matters]
    fp = first_divergence(
        fingerprints(run.metric_rows()), fingerprints(side.metrics()), up_to=steps
    )
    weights_compared = steps is None or steps == total
    tensors, tolerance = _weights_diff(run, side, atol=atol) if weights_compared else ([], [])
    if matters:
        identical = False
        within = weights_compared and all(t.within for t in tolerance)
        verdict = "within tolerance" if within else "outside tolerance"
    else:
        identical = fp.step is None and not tensors
        within = identical
        verdict = "IDENTICAL" if identical else "MISMATCH"
    return AgainstReport(
        target=str(run.path),
        trainer=record.trainer,
        command=new.command.repro if new.command is not None else None,
        verdict=verdict,
        identical=identical,
        ok=within,
        bitwise_expected=not matters,
        atol=atol if matters else None,
        env_diff=env_diff,
        data_fingerprint=DataFingerprints(
            recorded=record.data_fingerprint, now=new.data_fingerprint
        ),
        steps=steps or total,
        fingerprints_compared=fp.compared,
        first_divergent_step=fp.step,
        weights_compared=weights_compared,
        tensors=tensors,
        tolerance=tolerance if matters else None,
        weights_sha256=WeightsShas(recorded=record.weights_sha256, regenerated=new.weights_sha256),
    )


def _env_diff(record: RunRecord, new: RunRecord) -> list[EnvChange]:
    """The environment fields that differ, the world size and backend included."""

    env_diff = [EnvChange(**d) for d in diff_environments(record.env.as_dict(), new.env.as_dict())]
    (world_a, backend_a), (world_b, backend_b) = _world(record), _world(new)
    for name, a, b in (("world_size", world_a, world_b), ("backend", backend_a, backend_b)):
        if a != b:  # another reduction order: no bitwise claim
            env_diff.append(EnvChange(field=name, a=a, b=b, matters=True))
    return env_diff


def _world(record: RunRecord) -> tuple[int, str | None]:
    """``(world size, backend)`` a run trained with (``(1, None)``: not distributed)."""
    dist = record.distributed
    return (dist.world_size, dist.backend) if dist is not None else (1, None)


def _weights_diff(
    run: Any, side: Side, *, atol: float
) -> tuple[list[TensorDiff], list[ToleranceRow]]:
    """``(tensors that differ, tolerance table)`` of the recorded and regenerated weights.

    A modified weights file is a failed check (exit 3), not a "divergence"; an unrecorded
    sha256 is fine here: the weights are only compared, tensor by tensor (either layout).
    """
    from modelkit.repro.compare import diff_states

    recorded = read_state_dict(verified_weights(run.path, trust_unrecorded=True))
    regenerated = read_state_dict(read_layout(side.run_dir))
    return diff_states(recorded, regenerated), tolerance_table(recorded, regenerated, atol=atol)


def tolerance_table(a: dict[str, Any], b: dict[str, Any], *, atol: float) -> list[ToleranceRow]:
    """Max abs diff of every tensor of two states, and whether it is within ``atol``."""
    rows = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if x is None or y is None or x.shape != y.shape:
            rows.append(ToleranceRow(name=name, max_abs_diff=None, within=False))
            continue
        diff = (x.double() - y.double()).abs()
        worst = float(diff.max()) if diff.numel() else 0.0
        rows.append(ToleranceRow(name=name, max_abs_diff=worst, within=worst <= atol))
    return rows
