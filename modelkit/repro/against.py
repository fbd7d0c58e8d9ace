"""``modelkit repro --against RUN``: regenerate a recorded run from its record and compare it
with the recorded weights, after diffing the environment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from modelkit.env import diff_environments
from modelkit.errors import BadInputError, DataError, NoWeights, RunDirError
from modelkit.repro.command import describe, recorded_command, run_commands
from modelkit.repro.diverge import Event
from modelkit.repro.hooks import DETERMINISTIC_ENV
from modelkit.repro.procs import Workspace
from modelkit.repro.records import fingerprints, first_divergence
from modelkit.repro.sides import (
    Side,
    check_world,
    recorded_threads,
    recorded_world,
    run_worker,
)
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
) -> dict[str, Any]:
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
    record = run.read_record()
    if record.get("status") != "complete":
        raise RunDirError(
            f"{run_dir} is not a complete run (status {record.get('status')!r})",
            hint=f"finish it first: modelkit train --resume {run_dir}",
        )
    if not has_weights(run.path):  # either layout (checked when the weights are compared)
        raise NoWeights(run.path)
    total = int(record.get("steps") or 0)
    own_loop = not isinstance(run.read_config().get("modelkit", {}).get("train"), dict)
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
        report["timings"] = {"total_s": round(time.perf_counter() - t0, 3)}
        report["work_dir"] = str(ws.path) if ws.keep else None
        return report


def _regenerate_command(
    run_dir: Path, record: dict[str, Any], *, workspace: Workspace, emit: Event
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
    if (record.get("determinism") or {}).get("enabled"):
        env[DETERMINISTIC_ENV] = "1"
    emit(f"running the recorded command again: `{describe(argv)}` (in {cwd})")
    (side,) = run_commands([("regen", env)], argv=argv, cwd=cwd, workspace=workspace)
    recorded = (record.get("data") or {}).get("fingerprint")
    now = (side.record().get("data") or {}).get("fingerprint")
    if recorded not in (None, "unknown") and now != recorded:
        raise DataError(
            f"the command now trains on data with fingerprint {now}, the run recorded {recorded}",
            hint="regenerate on the recorded data",
        )
    return side


def _regenerate_builtin(
    run: Any,
    record: dict[str, Any],
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
    opts = {
        "stop_at_step": steps,
        "threads": threads,
        "force_deterministic": True,
        "fingerprint_every": record.get("fingerprint_every"),
        "expect_data_fingerprint": record.get("data", {}).get("fingerprint"),
        "dump_steps": [0],
        "nproc_per_node": world,
    }
    if world > 1:
        emit(f"with {world} processes (torchrun, DDP)")
    return run_worker(config, label="regen", workspace=ws, options=opts)


def _against_report(
    run: Any, record: dict[str, Any], side: Side, *, steps: int | None, total: int, atol: float
) -> dict[str, Any]:
    """Compare a regenerated run with the recorded one (env diff first)."""
    new = side.record()
    env_diff = _env_diff(record, new)
    data_fp = {
        "recorded": (record.get("data") or {}).get("fingerprint"),
        "now": (new.get("data") or {}).get("fingerprint"),
    }
    matters = [d for d in env_diff if d["matters"]]
    fp = first_divergence(
        fingerprints(run.read_metrics()), fingerprints(side.metrics()), up_to=steps
    )
    weights_compared = steps is None or steps == total
    tensors, tolerance = _weights_diff(run, side, atol=atol) if weights_compared else ([], [])
    if matters:
        identical = False
        within = weights_compared and all(t["within"] for t in tolerance)
        verdict = "within tolerance" if within else "outside tolerance"
    else:
        identical = fp["step"] is None and not tensors
        within = identical
        verdict = "IDENTICAL" if identical else "MISMATCH"
    return {
        "mode": "against",
        "target": str(run.path),
        "trainer": record.get("trainer", "modelkit"),
        "command": (new.get("command") or {}).get("repro"),
        "verdict": verdict,
        "identical": identical,
        "ok": within,
        "bitwise_expected": not matters,
        "atol": atol if matters else None,
        "env_diff": env_diff,
        "data_fingerprint": data_fp,
        "steps": steps or total,
        "fingerprints_compared": fp["compared"],
        "first_divergent_step": fp["step"],
        "weights_compared": weights_compared,
        "tensors": tensors,
        "tolerance": tolerance if matters else None,
        "weights_sha256": {
            "recorded": record.get("weights_sha256"),
            "regenerated": new.get("weights_sha256"),
        },
    }


def _env_diff(record: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The environment fields that differ, the world size and backend included."""

    env_diff = diff_environments(record.get("env", {}), new.get("env", {}))
    was = record.get("distributed") or {"world_size": 1, "backend": None}
    now = new.get("distributed") or {"world_size": 1, "backend": None}
    for key in ("world_size", "backend"):
        if was.get(key) != now.get(key):  # another reduction order: no bitwise claim
            env_diff.append({"field": key, "a": was.get(key), "b": now.get(key), "matters": True})
    return env_diff


def _weights_diff(
    run: Any, side: Side, *, atol: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(tensors that differ, tolerance table)`` of the recorded and regenerated weights.

    A modified weights file is a failed check (exit 3), not a "divergence"; an unrecorded
    sha256 is fine here: the weights are only compared, tensor by tensor (either layout).
    """
    from modelkit.repro.compare import diff_states

    recorded = read_state_dict(verified_weights(run.path, trust_unrecorded=True))
    regenerated = read_state_dict(read_layout(side.run_dir))
    return diff_states(recorded, regenerated), tolerance_table(recorded, regenerated, atol=atol)


def tolerance_table(a: dict[str, Any], b: dict[str, Any], *, atol: float) -> list[dict[str, Any]]:
    """Max abs diff of every tensor of two states, and whether it is within ``atol``."""
    rows = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if x is None or y is None or x.shape != y.shape:
            rows.append({"name": name, "max_abs_diff": None, "within": False})
            continue
        diff = (x.double() - y.double()).abs()
        worst = float(diff.max()) if diff.numel() else 0.0
        rows.append({"name": name, "max_abs_diff": worst, "within": worst <= atol})
    return rows
