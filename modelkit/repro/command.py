"""``modelkit repro -- CMD``: prove any training command reproducible (or show where it is not).

The command is the user's own, unmodified: it writes its run through
:func:`modelkit.start_run`, and ``repro`` steers that run through environment variables (see
:mod:`modelkit.repro.hooks`): each side writes to its own fresh ``MODELKIT_RUN_DIR``, the
control gets ``MODELKIT_SEED``, the perturbed side ``MODELKIT_PERTURB``, and a localising
re-run ``MODELKIT_DUMP_STEPS``. The comparison is the one built-in runs get
(:func:`modelkit.repro.diverge.compare_sides`): final state, step fingerprints, metrics.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError, ModelkitError, RunDirError
from modelkit.redact import REDACTED, redact
from modelkit.repro.diverge import Event, compare_sides, control_report
from modelkit.repro.hooks import (
    COMMAND_ENV,
    DETERMINISTIC_ENV,
    DUMP_DIR_ENV,
    DUMP_STEPS_ENV,
    PERTURB_ENV,
    REPRO_ENVS,
    format_steps,
)
from modelkit.repro.procs import Workspace
from modelkit.repro.report import ReproTimings, TwiceReport
from modelkit.repro.sides import Side
from modelkit.runs.parts import CommandInfo, ReproCommand
from modelkit.runs.record import RunRecord
from modelkit.runs.typed import to_plain
from modelkit.weights import has_weights

TAIL_LINES = 15
# processes whose command line is no training command (a notebook kernel, an IPython shell)
INTERACTIVE = ("ipykernel", "ipython", "jupyter", "colab_kernel_launcher")
ADD_START_RUN = (
    "record the run with the API: `import modelkit` and "
    '`with modelkit.start_run("runs/exp", config=vars(args), model=model, data=train_ds) as run:` '
    "around the loop, `run.log(step, loss=loss.item())` after each optimizer step and "
    "`run.finish(model)` at the end (README: 'Your own training loop')"
)


class CommandFailed(ModelkitError):
    """The user's command exited non-zero; ``tail`` holds the end of its stderr."""

    def __init__(self, message: str, *, hint: str | None = None, tail: list[str]) -> None:
        super().__init__(message, hint=hint)
        self.tail = tail


def describe(argv: list[str]) -> str:
    """The command as a shell would show it, its secrets redacted (it is shown and recorded)."""
    return shlex.join(redact(list(argv)))


def run_commands(
    jobs: list[tuple[str, dict[str, str]]],
    *,
    argv: list[str],
    cwd: Path,
    workspace: Workspace,
) -> list[Side]:
    """Run ``argv`` once per ``(label, extra env)`` job, side by side, each into its own run dir."""
    base = {k: v for k, v in os.environ.items() if k not in REPRO_ENVS}
    command = json.dumps(to_plain(ReproCommand(argv=list(argv), cwd=str(cwd))))
    started = []
    for label, extra in jobs:
        out = workspace.path / label
        dump = workspace.path / f"{label}.state"
        env = {
            **base,
            "MODELKIT_RUN_DIR": str(out),
            DUMP_DIR_ENV: str(dump),
            COMMAND_ENV: command,
            **extra,
        }
        log_out = open(workspace.path / f"{label}.stdout", "wb")  # noqa: SIM115 (closed below)
        log_err = open(workspace.path / f"{label}.stderr", "wb")  # noqa: SIM115
        try:
            proc = workspace.spawn(
                argv, cwd=cwd, env=env, stdout=log_out, stderr=log_err, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            log_out.close()
            log_err.close()
            raise BadInputError(
                f"cannot run `{describe(argv)}`: {exc.strerror or exc}",
                hint="check the command (after `--`) and that it is on PATH",
            ) from None
        started.append((label, out, dump, proc, time.perf_counter(), (log_out, log_err)))
    sides, failure = [], None
    for label, out, dump, proc, t0, files in started:
        proc.wait()
        seconds = time.perf_counter() - t0
        for f in files:
            f.close()
        sides.append(Side(label, out, dump, seconds))
        if failure is None:
            failure = _check_side(label, out, proc.returncode, workspace, argv)
    if failure is not None:
        raise failure
    return sides


def _check_side(
    label: str, out: Path, code: int, workspace: Workspace, argv: list[str]
) -> ModelkitError | None:
    stderr = (workspace.path / f"{label}.stderr").read_text(encoding="utf-8", errors="replace")
    tail = stderr.rstrip().splitlines()[-TAIL_LINES:]
    if code != 0:
        last = tail[-1] if tail else "(no output on stderr)"
        return CommandFailed(
            f"`{describe(argv)}` failed in run {label} (exit {code}): {last}",
            hint="the end of its stderr is above; run the command alone to debug it",
            tail=tail,
        )
    if (out / "run.json").is_file() and has_weights(out):
        return None
    staging = out.parent / f".{out.name}.partial"
    if staging.is_dir():
        return RunDirError(
            f"`{describe(argv)}` exited 0 but its run never finished (no run.finish(model))",
            hint="call run.finish(model, metrics=...) at the end of training",
        )
    return BadInputError(
        f"`{describe(argv)}` exited 0 but wrote no run directory "
        "(it does not call modelkit.start_run, so repro has nothing to compare)",
        hint=ADD_START_RUN,
    )


def _cmd_rerun(
    argv: list[str], cwd: Path, *, env: dict[str, str], perturb_b: str | None, workspace: Workspace
) -> Any:
    """The localising re-run of a command: both sides again, dumps (and fingerprints) in a window."""
    count = [0]

    def rerun(stop: int, steps: list[int]) -> tuple[Side, Side]:
        count[0] += 1
        tag = f"l{count[0]}"
        window = {**env, DUMP_STEPS_ENV: format_steps(steps)}
        b_env = {**window, PERTURB_ENV: perturb_b} if perturb_b else window
        a, b = run_commands(
            [(f"{tag}a", window), (f"{tag}b", b_env)], argv=argv, cwd=cwd, workspace=workspace
        )
        return a, b

    return rerun


def repro_command(
    argv: list[str],
    *,
    cwd: Path | None = None,
    control: bool = False,
    deterministic: bool = False,
    work_dir: Path | None = None,
    on_event: Event | None = None,
) -> TwiceReport:
    """Run ``argv`` twice (and a control with another seed) and compare like built-in runs.

    ``deterministic`` sets ``MODELKIT_DETERMINISTIC=1`` (deterministic algorithms in
    ``seed_everything``/``start_run``). ``MODELKIT_PERTURB`` (a test hook) reaches only the
    second run. Returns the report (``report.identical`` is the verdict).
    """
    if not argv:
        raise BadInputError(
            "no command after `--`", hint="modelkit repro -- python train.py --epochs 1"
        )
    emit = on_event or (lambda _m: None)
    cwd = (cwd or Path.cwd()).absolute()
    perturb = os.environ.get(PERTURB_ENV) or None
    env = {DUMP_STEPS_ENV: "0"}  # the first logged step: tensors named at once if it differs
    if deterministic:
        env[DETERMINISTIC_ENV] = "1"
    with Workspace(work_dir) as ws:
        t0 = time.perf_counter()
        emit(f"running `{describe(argv)}` twice, each in a fresh process")
        b_env = {**env, PERTURB_ENV: perturb} if perturb else env
        a, b = run_commands([("a", env), ("b", b_env)], argv=argv, cwd=cwd, workspace=ws)
        runs_s = time.perf_counter() - t0
        rerun = _cmd_rerun(argv, cwd, env=env, perturb_b=perturb, workspace=ws)
        compared = compare_sides(a, b, up_to=None, rerun=rerun, emit=emit)
        rec = a.record()
        report = TwiceReport(
            **compared.fields(),
            mode="command",
            target=describe(argv),
            target_kind="command",
            command=ReproCommand(argv=redact(list(argv)), cwd=redact(str(cwd))),
            perturbed=perturb,
            seed=rec.seed,
            env=rec.env,
            determinism=rec.determinism,
            distributed=None,
        )
        if control:
            seed = int(rec.seed or 0) + 1
            emit(f"running the control with MODELKIT_SEED={seed}")
            ctrl_env = {**env, "MODELKIT_SEED": str(seed)}
            (c,) = run_commands([("control", ctrl_env)], argv=argv, cwd=cwd, workspace=ws)
            ctrl = compare_sides(a, c, up_to=None, rerun=None, emit=emit)
            report = replace(report, control=control_report(seed, ctrl))
        return replace(
            report,
            timings=ReproTimings(
                runs_s=round(runs_s, 3), total_s=round(time.perf_counter() - t0, 3)
            ),
            work_dir=str(ws.path) if ws.keep else None,
        )


def recorded_command(record: RunRecord) -> tuple[list[str], Path] | None:
    """The command that made a run: the one ``repro -- CMD`` ran, else the script's command line.

    None when the record holds no usable command (e.g. a run made by a notebook).
    """
    cmd = record.command
    if cmd is None:
        return None
    found = _found_command(cmd)
    if found is not None and any(REDACTED in a for a in found[0]):
        raise BadInputError(
            f"the recorded command `{describe(found[0])}` had a secret removed before it was "
            "recorded, so it cannot be run again as recorded",
            hint="pass secrets through the environment (e.g. HF_TOKEN), not the command line; "
            "or run `modelkit repro -- CMD` with the secret yourself",
        )
    return found


def _found_command(cmd: CommandInfo) -> tuple[list[str], Path] | None:
    repro = cmd.repro
    if repro is not None and repro.argv:
        return list(repro.argv), Path(repro.cwd or ".")
    orig, argv = cmd.orig_argv, cmd.argv
    seen = " ".join([*orig, *argv])
    if any(name in seen for name in INTERACTIVE):  # a notebook kernel: nothing to re-run
        return None
    cwd = Path(cmd.cwd or ".")
    if len(orig) > 1 and orig[1:2] not in (["-c"],):
        exe = cmd.executable or orig[0]
        if orig[1:2] == ["-m"] or orig[1].endswith(".py"):
            return [exe, *orig[1:]], cwd
    if argv and argv[0].endswith(".py"):
        return [cmd.executable or sys.executable, *argv], cwd
    return None
