"""``modelkit repro``: prove a run reproducible, or show where and how it is not.

Two modes:

* :func:`repro_twice` trains the same config twice in fresh processes (determinism on) and
  compares the final state sha256 (params, buffers, optimizer state), the per-step
  fingerprints and the metrics. On a mismatch it localises the first divergent step: the
  window between the last equal and the first different fingerprint is re-run on both sides
  with a fingerprint (and a state dump) at every step, and the tensors that differ at the
  first different step are named with their max abs diff and max ULP distance.
* :func:`repro_against` regenerates a recorded run from its ``config.json``/``run.json`` and
  compares it with the recorded fingerprints and weights, after diffing the environment.

Both return a JSON-ready report; ``report["identical"]`` is the verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, ModelkitError, NoWeights, RunDirError
from modelkit.runs.perturb import PERTURB_ENV
from modelkit.weights import has_weights, read_layout, verified_weights
from modelkit.weights.load import read_state_dict

CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
Event = Callable[[str], None]


@dataclass
class Side:
    """One finished worker run: its run directory, state dumps and wall time."""

    label: str
    run_dir: Path
    dump_dir: Path
    seconds: float

    def record(self) -> dict[str, Any]:
        """The worker's run.json."""
        return json.loads((self.run_dir / "run.json").read_text(encoding="utf-8"))

    def metrics(self) -> list[dict[str, Any]]:
        """The worker's metrics rows."""
        from modelkit.runs import RunDir

        return RunDir(self.run_dir).read_metrics()

    def dump(self, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(tensors, meta)`` of the state dumped at ``step``."""
        from modelkit.runs.checkpoint import PREFIX, SUFFIX, load_checkpoint

        return load_checkpoint(self.dump_dir / f"{PREFIX}{step:08d}{SUFFIX}")

    def result(self) -> dict[str, Any]:
        """What the worker computed itself: the final state sha256 and step."""
        path = Path(f"{self.run_dir}.result.json")
        if not path.is_file():  # a command's run: written by its start_run hooks
            from modelkit.repro.hooks import RESULT_FILE

            path = self.dump_dir / RESULT_FILE
        return json.loads(path.read_text(encoding="utf-8"))

    def has_dump(self, step: int) -> bool:
        """Whether a state dump exists for ``step``."""
        from modelkit.runs.checkpoint import PREFIX, SUFFIX

        return (self.dump_dir / f"{PREFIX}{step:08d}{SUFFIX}").is_file()


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


def _recorded_threads(run_dir: Path) -> int | None:
    """The thread count a recorded run used (run.json determinism, else env), if known."""
    path = run_dir / "run.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return (record.get("determinism") or {}).get("threads") or record.get("env", {}).get("threads")


def state_sha256(tensors: dict[str, Any], meta: dict[str, Any]) -> str:
    """sha256 of params, buffers and optimizer state (+ scheduler) of a dumped state."""
    from modelkit.runs.fingerprint import state_digest

    keep = {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}
    objects = meta.get("objects", {})
    return state_digest(
        keep, {"optimizer": meta["optimizer"], "scheduler": objects.get("scheduler")}
    )


class _Workspace:
    """Where worker runs go; a temp dir removed afterwards unless the caller named one."""

    def __init__(self, work_dir: Path | None) -> None:
        self.keep = work_dir is not None
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            if any(work_dir.iterdir()):
                raise RunDirError(
                    f"--work-dir {work_dir} is not empty", hint="pass a new or empty directory"
                )
            self.path = work_dir
        else:
            self.path = Path(tempfile.mkdtemp(prefix="modelkit-repro-"))

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


def run_worker(config: Any, *, label: str, workspace: Path, options: dict[str, Any]) -> Side:
    """Train ``config`` in a fresh Python process; typed errors come back as typed errors."""
    return run_workers([(config, label, options)], workspace=workspace)[0]


def run_workers(jobs: list[tuple[Any, str, dict[str, Any]]], *, workspace: Path) -> list[Side]:
    """Run ``(config, label, options)`` jobs, each in its own fresh process, side by side.

    Running them concurrently does not change their results (thread count, seeds and data
    order are fixed per process); it only shortens the wall time. Multi-process (torchrun)
    jobs run one after another: two launchers at once race for rendezvous ports and
    oversubscribe the cores.
    """
    env = {k: v for k, v in os.environ.items() if k != PERTURB_ENV}
    started = []
    for config, label, options in jobs:
        out = workspace / label
        dump = workspace / f"{label}.state"
        spec = workspace / f"{label}.spec.json"
        opts = {**options, "dump_dir": str(dump)}
        nproc = int(opts.pop("nproc_per_node", None) or 1)
        spec.write_text(json.dumps({"config": config.to_dict(), "out": str(out), "options": opts}))
        cmd = [sys.executable, "-m", "modelkit.repro.worker", str(spec)]
        job_env = env
        if nproc > 1:  # the same worker under torchrun: DDP, rank 0 writes the run
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={nproc}",
                "--max-restarts=0",
                "-m",
                "modelkit.repro.worker",
                str(spec),
            ]
            job_env = {"OMP_NUM_THREADS": "1", **env}
        proc = subprocess.Popen(
            cmd,
            env=job_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((label, out, dump, proc, time.perf_counter()))
        if nproc > 1:
            _, stderr = proc.communicate()  # finished before the next job starts
            done = _Done(proc.returncode, stderr, time.perf_counter())
            started[-1] = (label, out, dump, done, started[-1][4])
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
    errors = [json.loads(f.read_text()) for f in files if f.is_file()]
    errors.sort(key=lambda e: bool(e.get("secondary")))  # a rank stopped by another: last
    if errors:
        err = errors[0]
        cls = BadInputError if err["exit_code"] == 2 else ModelkitError
        return cls(f"run {label}: {err['message']}", hint=err.get("hint"))
    # the last line that says something (torchrun's report ends in a '=====' rule)
    said = [line.strip() for line in stderr.splitlines() if any(c.isalnum() for c in line)]
    tail = said[-1] if said else "(no output)"
    return ModelkitError(
        f"run {label} failed (exit {code}): {tail}",
        hint="re-run with MODELKIT_DEBUG=1, or train the config with `modelkit train`",
    )


Rerun = Callable[[int, list[int]], "tuple[Side, Side]"]


def _worker_rerun(config: Any, *, perturb_b: str | None, workspace: Path, tag: str) -> Rerun:
    """Re-run both sides of a built-in run up to ``stop`` with dumps at ``steps``."""

    def rerun(stop: int, steps: list[int]) -> tuple[Side, Side]:
        opts = {"stop_at_step": stop, "fingerprint_every": 1, "dump_steps": steps}
        a, b = run_workers(
            [(config, f"{tag}a", opts), (config, f"{tag}b", {**opts, "perturb": perturb_b})],
            workspace=workspace,
        )
        return a, b

    return rerun


def _localise(
    a: Side,
    b: Side,
    *,
    step: int | None,
    last_equal: int | None,
    final_step: int,
    rerun: Rerun,
    emit: Event,
) -> dict[str, Any]:
    """Name the first divergent step and the tensors that differ there."""
    from modelkit.repro.compare import fingerprints, first_divergence

    if step is None:  # every fingerprint equal: the difference is in the final state only
        step = final_step
        last_equal = step - 1  # the final fingerprint is equal too: nothing to narrow down
    # A state dump at the first different fingerprint names the tensors only when the step
    # before it is known to be equal; otherwise (periodic fingerprints, and the final step,
    # which always has a dump) the window after the last equal fingerprint is re-run.
    narrowed = step == 0 or (last_equal is not None and last_equal == step - 1)
    if not (narrowed and a.has_dump(step) and b.has_dump(step)):
        lo = -1 if last_equal is None else last_equal
        emit(f"localising: re-running steps {lo + 1}..{step} with a fingerprint at every step")
        a, b = rerun(step, list(range(lo + 1, step + 1)))
        fine = first_divergence(fingerprints(a.metrics()), fingerprints(b.metrics()))
        step = fine["step"] if fine["step"] is not None else step
    tensors = _dump_diff(a, b, step)
    fa, fb = fingerprints(a.metrics()).get(step), fingerprints(b.metrics()).get(step)
    loss = None
    if fa and fb and fa.get("loss") != fb.get("loss"):
        loss = {"a": fa.get("loss"), "b": fb.get("loss")}
    return {"step": step, "tensors": tensors, "loss": loss}


def _dump_diff(a: Side, b: Side, step: int) -> list[dict[str, Any]]:
    """The tensors (model and optimizer state) that differ between two sides' dumps at ``step``."""
    from modelkit.repro.compare import diff_states

    ta, _ = a.dump(step)
    tb, _ = b.dump(step)
    keep = ("model.", "optim.")
    return diff_states(
        {k: v for k, v in ta.items() if k.startswith(keep)},
        {k: v for k, v in tb.items() if k.startswith(keep)},
    )


def _compare_sides(
    a: Side,
    b: Side,
    *,
    up_to: int | None,
    rerun: Rerun | None,
    emit: Event,
) -> dict[str, Any]:
    from modelkit.repro.records import compare_metrics, fingerprints, first_divergence

    ra, rb = a.record(), b.record()
    res_a, res_b = a.result(), b.result()
    final_a = res_a["final_step"]
    ma, mb = a.metrics(), b.metrics()
    fp = first_divergence(fingerprints(ma), fingerprints(mb), up_to=up_to)
    sa, sb = res_a["state_sha256"], res_b["state_sha256"]
    metrics = compare_metrics(ma, mb, up_to=up_to)
    weights = None
    if ra.get("weights_sha256") and rb.get("weights_sha256"):
        weights = {"a": ra["weights_sha256"], "b": rb["weights_sha256"]}
    identical = (
        fp["step"] is None
        and sa == sb
        and metrics["identical"]
        and (weights is None or weights["a"] == weights["b"])
    )
    out: dict[str, Any] = {
        "identical": identical,
        "steps": final_a,
        "fingerprints_compared": fp["compared"],
        "state_sha256": {"a": sa, "b": sb},
        "weights_sha256": weights,
        "metrics": metrics,
        "seconds": {"a": round(a.seconds, 3), "b": round(b.seconds, 3)},
    }
    if not identical and rerun is None:  # a control: no re-run, tensors only from dumps
        step = fp["step"] if fp["step"] is not None else final_a
        tensors: list[dict[str, Any]] = []
        if a.has_dump(step) and b.has_dump(step):
            tensors = _dump_diff(a, b, step)
        out["divergence"] = {"step": step, "tensors": tensors, "loss": None}
    elif not identical:
        out["divergence"] = _localise(
            a,
            b,
            step=fp["step"],
            last_equal=fp["last_equal"],
            final_step=final_a,
            rerun=rerun,
            emit=emit,
        )
    return out


def repro_twice(
    target: Path,
    *,
    steps: int | None = None,
    control: bool = False,
    work_dir: Path | None = None,
    project: Any = None,
    on_event: Event | None = None,
    nproc_per_node: int | None = None,
) -> dict[str, Any]:
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
    ws = _Workspace(work_dir)
    try:
        opts: dict[str, Any] = {"stop_at_step": steps, "dump_steps": [0]}
        world = nproc_per_node or (_recorded_world(target) if kind == "run" else 1)
        _check_world(world, config)
        if world > 1:
            opts["nproc_per_node"] = world
        if kind == "run":  # a recorded run: reuse its thread count (reduction order)
            opts["threads"] = _recorded_threads(target)
        t0 = time.perf_counter()
        jobs = [(config, "a", opts), (config, "b", {**opts, "perturb": perturb})]
        seed = config.seed + 1
        if control:
            jobs.append((config.replace(seed=seed), "control", opts))
            emit(f"training runs a, b and a control (seed {seed}), each in a fresh process")
        else:
            emit("training runs a and b, each in a fresh process")
        sides = run_workers(jobs, workspace=ws.path)
        a, b = sides[0], sides[1]
        checked = time.perf_counter() - t0
        report = _compare_sides(
            a,
            b,
            up_to=steps,
            rerun=_worker_rerun(config, perturb_b=perturb, workspace=ws.path, tag="l"),
            emit=emit,
        )
        report.update(
            mode="twice",
            target=str(target),
            target_kind=kind,
            config_sha256=config.digest(),
            perturbed=perturb,
            env=a.record().get("env"),
            determinism=a.record().get("determinism"),
            distributed=a.record().get("distributed"),
            timings={"runs_s": round(checked, 3), "total_s": None},
        )
        if control:
            c = sides[2]
            ctrl = _compare_sides(
                a,
                c,
                up_to=steps,
                rerun=_worker_rerun(config, perturb_b=None, workspace=ws.path, tag="lc"),
                emit=emit,
            )
            report["control"] = control_report(seed, ctrl)
        report["timings"]["total_s"] = round(time.perf_counter() - t0, 3)
        report["work_dir"] = str(ws.path) if ws.keep else None
        return report
    finally:
        ws.close()


def control_report(seed: int, ctrl: dict[str, Any]) -> dict[str, Any]:
    """The ``control`` block of a report: does another seed change the run, and where first."""
    div = ctrl.get("divergence") or {}
    return {
        "seed": seed,
        "differs": not ctrl["identical"],
        "first_divergent_step": div.get("step"),
        "tensors": div.get("tensors", []),
    }


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
    ws = _Workspace(work_dir)
    try:
        t0 = time.perf_counter()
        if own_loop:
            side = _regenerate_command(run_dir, record, workspace=ws.path, emit=emit)
        else:
            side = _regenerate_builtin(
                run, record, steps=steps, nproc_per_node=nproc_per_node, ws=ws, emit=emit
            )
        report = _against_report(run, record, side, steps=steps, total=total, atol=atol)
        report["timings"] = {"total_s": round(time.perf_counter() - t0, 3)}
        report["work_dir"] = str(ws.path) if ws.keep else None
        return report
    finally:
        ws.close()


def _regenerate_command(
    run_dir: Path, record: dict[str, Any], *, workspace: Path, emit: Event
) -> Side:
    """Run a user-loop run's recorded command again into a fresh run directory."""
    from modelkit.repro.command import describe, recorded_command, run_commands
    from modelkit.repro.hooks import DETERMINISTIC_ENV

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
        from modelkit.errors import DataError

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
    ws: _Workspace,
    emit: Event,
) -> Side:
    """Train a modelkit-train run's recorded config again in a fresh process."""
    run_dir = run.path
    config = run.train_config()
    threads = _recorded_threads(run_dir)
    recorded_world = _recorded_world(run_dir)
    world = nproc_per_node or recorded_world
    _check_world(world, config)
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
    return run_worker(config, label="regen", workspace=ws.path, options=opts)


def _against_report(
    run: Any, record: dict[str, Any], side: Side, *, steps: int | None, total: int, atol: float
) -> dict[str, Any]:
    """Compare a regenerated run with the recorded one (env diff first)."""
    from modelkit.env import diff_environments
    from modelkit.repro.compare import diff_states
    from modelkit.repro.records import fingerprints, first_divergence

    new = side.record()
    env_diff = diff_environments(record.get("env", {}), new.get("env", {}))
    was = record.get("distributed") or {"world_size": 1, "backend": None}
    now = new.get("distributed") or {"world_size": 1, "backend": None}
    for key in ("world_size", "backend"):
        if was.get(key) != now.get(key):  # another reduction order: no bitwise claim
            env_diff.append({"field": key, "a": was.get(key), "b": now.get(key), "matters": True})
    data_fp = {
        "recorded": (record.get("data") or {}).get("fingerprint"),
        "now": (new.get("data") or {}).get("fingerprint"),
    }
    matters = [d for d in env_diff if d["matters"]]
    fp = first_divergence(
        fingerprints(run.read_metrics()), fingerprints(side.metrics()), up_to=steps
    )
    tensors: list[dict[str, Any]] = []
    tolerance: list[dict[str, Any]] = []
    weights_compared = steps is None or steps == total
    if weights_compared:
        # a modified weights file is a failed check (exit 3), not a "divergence"; an unrecorded
        # sha256 is fine here: the weights are only compared, tensor by tensor (either layout)
        recorded = read_state_dict(verified_weights(run.path, trust_unrecorded=True))
        regenerated = read_state_dict(read_layout(side.run_dir))
        tensors = diff_states(recorded, regenerated)
        tolerance = tolerance_table(recorded, regenerated, atol=atol)
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


def _own_loop_run(run_dir: Path) -> bool:
    """Whether a run directory was written by the user's own loop (no modelkit.train config)."""
    path = run_dir / "config.json"
    if not path.is_file():
        return False
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(cfg, dict) and not isinstance((cfg.get("modelkit") or {}).get("train"), dict)


def _twice_from_record(
    run_dir: Path,
    *,
    steps: int | None,
    control: bool,
    work_dir: Path | None,
    emit: Event,
    world: int | None,
) -> dict[str, Any]:
    """``repro RUN_DIR`` for a user-loop run: its recorded command, twice, deterministic."""
    from modelkit.repro.command import recorded_command, repro_command
    from modelkit.runs import open_run

    record = open_run(run_dir, require=("run.json", "config.json")).read_record()
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
    report["target"] = str(run_dir)
    report["target_kind"] = "run"
    return report


def _recorded_world(run_dir: Path) -> int:
    """The number of processes a recorded run trained with (1 for older records)."""
    path = run_dir / "run.json"
    if not path.is_file():
        return 1
    record = json.loads(path.read_text(encoding="utf-8"))
    return int((record.get("distributed") or {}).get("world_size") or 1)


def _check_world(world: int, config: Any) -> None:
    """Refuse a world size this machine cannot run (before any process starts)."""
    if world < 1:
        raise BadInputError("--nproc-per-node must be >= 1", hint="e.g. --nproc-per-node 2")
    if world > 1:
        from modelkit.training.launch import LaunchConfig, launch_device_type, validate_launch

        validate_launch(
            LaunchConfig(nproc_per_node=world), device_type=launch_device_type(config.device)
        )


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
