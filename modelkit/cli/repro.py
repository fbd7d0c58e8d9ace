"""`modelkit repro`: prove a run reproducible bit for bit, or name where it diverges."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import FormatOpt, NumberOpt, OutputFormat, QuietOpt
from modelkit.errors import BadInputError, CheckFailed

if TYPE_CHECKING:
    from modelkit.repro.report import (
        AgainstReport,
        Control,
        Divergence,
        TensorDiff,
        TwiceReport,
    )

EXAMPLES = """
Examples:

  modelkit repro configs/mnist.toml               # train twice, compare bitwise (exit 0 / 3)

  modelkit repro runs/a --steps 200                # prove a 200-step prefix of a recorded config

  modelkit repro configs/mnist.toml --control      # + a perturbed-seed run that must differ

  modelkit repro --against runs/a                  # regenerate a recorded run, compare weights

  modelkit repro --against runs/a --format json

  modelkit repro configs/mnist.toml --nproc-per-node 2   # two 2-process DDP runs, bitwise

  modelkit repro --against runs/ddp --nproc-per-node 1   # another world size: a tolerance

  modelkit repro --deterministic -- python train.py --epochs 1   # your own script, twice

  modelkit repro --control -- python train.py      # + a run with MODELKIT_SEED=seed+1

Your own script: it records its run with modelkit.start_run (README: "Your own training
loop"); repro points each run at its own directory through MODELKIT_RUN_DIR.
"""


# the verb's own options (shared ones live in modelkit.cli._options)
TargetArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="A config file (.toml/.yaml/.json) or a run directory to train twice; or, "
        "after `--`, any training command that records its run with modelkit.start_run.",
        metavar="CONFIG_OR_RUN_DIR | -- CMD [ARGS...]",
        show_default=False,
    ),
]
AgainstOpt = Annotated[
    Path | None,
    typer.Option(
        "--against",
        help="Regenerate this recorded run from its record and compare with its weights.",
        metavar="RUN_DIR",
    ),
]
StepsOpt = Annotated[int | None, NumberOpt(help="Prove only the first N steps (long runs).", ge=1)]
ControlOpt = Annotated[
    bool, typer.Option(help="Also run a perturbed-seed negative control (must differ).")
]
AtolOpt = Annotated[
    float,
    NumberOpt(help="Tolerance when the environment rules out bitwise equality.", ge=0),
]
WorkDirOpt = Annotated[
    Path | None,
    typer.Option(help="Keep the runs in this (new or empty) directory instead of a temp dir."),
]
CommandDeterministicOpt = Annotated[
    bool,
    typer.Option(
        help="-- CMD: deterministic algorithms in the command (MODELKIT_DETERMINISTIC=1); "
        "config and run targets always are."
    ),
]
NprocPerNodeOpt = Annotated[
    int | None,
    NumberOpt(
        help="Processes per run (torchrun + DDP); default: the run's recorded world size, else 1.",
        ge=1,
    ),
]


@o.handle_errors
def command(
    args: TargetArg = None,
    against: AgainstOpt = None,
    steps: StepsOpt = None,
    control: ControlOpt = False,
    atol: AtolOpt = 1e-4,
    work_dir: WorkDirOpt = None,
    deterministic: CommandDeterministicOpt = False,
    nproc_per_node: NprocPerNodeOpt = None,
    fmt: FormatOpt = OutputFormat.text,
    quiet: QuietOpt = False,
) -> None:
    """Train twice in fresh processes (or regenerate a recorded run) and compare bit for bit."""
    from modelkit.project import load_project
    from modelkit.repro import repro_twice

    target, cmd = _split_args(args or [])
    if cmd is not None:
        _check_command_flags(against=against, steps=steps, nproc_per_node=nproc_per_node)
        _run_command(
            cmd,
            control=control,
            deterministic=deterministic,
            work_dir=work_dir,
            fmt=fmt,
            quiet=quiet,
        )
        return
    _check_target_flags(target, against=against, control=control)
    progress = _progress(fmt, quiet=quiet)
    project = load_project()
    if against is not None:
        _run_against(
            against,
            steps=steps,
            atol=atol,
            work_dir=work_dir,
            project=project,
            on_event=progress,
            nproc_per_node=nproc_per_node,
            fmt=fmt,
        )
        return
    assert target is not None
    report = repro_twice(
        target,
        steps=steps,
        control=control,
        work_dir=work_dir,
        project=project,
        on_event=progress,
        nproc_per_node=nproc_per_node,
    )
    _render_twice(report, fmt)
    _verdict(report, control=control)


def _progress(fmt: OutputFormat, *, quiet: bool) -> Callable[[str], None] | None:
    """Progress lines (dimmed, on stderr) for text output; none when quiet or for JSON."""
    if quiet or fmt is not OutputFormat.text:
        return None
    return lambda m: o.info(f"[dim]{o.escape(m)}[/]")


def _check_command_flags(
    *, against: Path | None, steps: int | None, nproc_per_node: int | None
) -> None:
    """``-- CMD`` takes neither ``--against`` nor the options of config and run targets."""

    if against is not None:
        raise BadInputError(
            "give either -- CMD or --against RUN_DIR (exactly one)",
            hint="modelkit repro -- python train.py  |  modelkit repro --against runs/a",
        )
    if steps is not None or nproc_per_node is not None:
        raise BadInputError(
            "--steps and --nproc-per-node apply to config and run targets, not to -- CMD",
            hint="pass your command's own options after `--`",
        )


def _check_target_flags(target: Path | None, *, against: Path | None, control: bool) -> None:
    """Exactly one of a target and ``--against``; ``--control`` only with a target."""

    if (target is None) == (against is None):
        raise BadInputError(
            "give either CONFIG_OR_RUN_DIR or --against RUN_DIR (exactly one)",
            hint="modelkit repro configs/mnist.toml  |  modelkit repro --against runs/a",
        )
    if against is not None and control:
        raise BadInputError(
            "--control applies to the two-run check, not --against",
            hint="modelkit repro RUN_DIR --control",
        )


def _run_against(against: Path, *, fmt: OutputFormat, **options: Any) -> None:
    """Regenerate the recorded run ``against`` (``options``: ``repro_against``'s keywords) and
    compare; a check failure if it does not match."""
    from modelkit.repro import repro_against

    report = repro_against(against, **options)
    _render_against(report, fmt)
    if not report.ok:
        raise CheckFailed(
            f"regenerated run {report.verdict}"
            + (
                f": first divergent step {report.first_divergent_step}"
                if report.first_divergent_step is not None
                else ""
            ),
            hint="see the tensors above; `modelkit repro RUN_DIR` checks this machine alone",
        )


def _split_args(args: list[str]) -> tuple[Path | None, list[str] | None]:
    """``(target, None)`` for one config file or run directory, else ``(None, command)``."""
    if not args:
        return None, None
    if len(args) == 1:
        one = Path(args[0])
        if one.suffix in (".toml", ".yaml", ".yml", ".json") or one.is_dir():
            return one, None
    return None, list(args)


def _run_command(
    cmd: list[str],
    *,
    control: bool,
    deterministic: bool,
    work_dir: Path | None,
    fmt: OutputFormat,
    quiet: bool,
) -> None:
    from modelkit.repro.command import CommandFailed, repro_command

    progress = _progress(fmt, quiet=quiet)
    try:
        report = repro_command(
            cmd,
            control=control,
            deterministic=deterministic,
            work_dir=work_dir,
            on_event=progress,
        )
    except CommandFailed as exc:
        for line in exc.tail:
            o.info(f"[dim]  | {o.escape(line)}[/]")
        raise
    _render_twice(report, fmt)
    _verdict(report, control=control)


def _verdict(report: TwiceReport, *, control: bool) -> None:
    if not report.identical:
        step = report.divergence.step if report.divergence is not None else None
        raise CheckFailed(
            f"runs differ: first divergent step {step}",
            hint="the tensors that differ are listed above (name, max abs diff, max ULP)",
        )
    if control and report.control is not None and not report.control.differs:
        hint = "the model may ignore the seed; report this"
        if report.mode == "command":
            hint = (
                "the command ignores MODELKIT_SEED: seed through "
                "modelkit.seed_everything(args.seed) or start_run(seed=args.seed)"
            )
        raise CheckFailed(
            "the negative control (perturbed seed) did not differ: the check cannot fail",
            hint=hint,
        )


def _tensor_rows(tensors: list[TensorDiff]) -> list[list[Any]]:
    return [
        [
            t.name,
            t.problem or f"{t.max_abs_diff:.3g}",
            _or_dash(t.max_ulp),
            f"{_or_dash(t.elements_differ)}/{_or_dash(t.numel)}",
        ]
        for t in tensors
    ]


def _or_dash(value: Any) -> Any:
    return "-" if value is None else value


TENSOR_COLUMNS = ["tensor", "max abs diff", "max ULP", "elements differ"]


def _render_twice(r: TwiceReport, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        o.print_json(r.to_dict())
        return
    if r.command is not None:
        import shlex

        argv = shlex.join(r.command.argv)
        o.out.print(f"command: {o.escape(argv)}  (in {o.escape(r.command.cwd or '')})")
    if r.world_size > 1:
        backend = r.distributed.backend if r.distributed else None
        o.out.print(f"world size {r.world_size} ({backend}) on both sides")
    if r.identical:
        o.out.print(
            f"IDENTICAL  {r.steps} steps, state sha256 {r.state_sha256.a}, "
            f"{r.fingerprints_compared} fingerprints and {r.metrics.rows} metric rows equal"
        )
    elif r.divergence is not None:
        _render_divergence(r.divergence)
        o.out.print(f"  state sha256: {r.state_sha256.a} vs {r.state_sha256.b}")
    if r.control is not None:
        _render_control(r.control)
    t = r.timings
    o.info(f"runs {t.runs_s or 0.0:.1f}s, total {t.total_s or 0.0:.1f}s")


def _render_divergence(d: Divergence) -> None:
    o.out.print(f"MISMATCH  first divergent step {d.step}")
    if d.loss:
        o.out.print(f"  loss at step {d.step}: {d.loss.a!r} vs {d.loss.b!r}")
    if d.tensors:
        o.table(f"tensors that differ at step {d.step}", TENSOR_COLUMNS, _tensor_rows(d.tensors))


def _render_control(c: Control) -> None:
    names = ", ".join(t.name for t in c.tensors[:3])
    status = (
        f"differs at step {c.first_divergent_step}"
        + (f" ({names}{', …' if len(c.tensors) > 3 else ''})" if names else "")
        + " as expected"
        if c.differs
        else "DID NOT DIFFER"
    )
    o.out.print(f"control (seed {c.seed}): {o.escape(status)}")


def _render_against(r: AgainstReport, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        o.print_json(r.to_dict())
        return
    diffs = r.env_diff
    if diffs:
        o.table(
            "environment: recorded vs now",
            ["field", "recorded", "now", "matters"],
            [[d.field, d.a, d.b, "yes" if d.matters else "no"] for d in diffs],
        )
    else:
        o.out.print("environment: same as recorded")
    o.out.print(f"data fingerprint: {r.data_fingerprint.now} (same as recorded)")
    if r.bitwise_expected:
        o.out.print(
            f"{r.verdict}  {r.steps} steps, {r.fingerprints_compared} fingerprints compared"
            + (", weights bitwise equal" if r.weights_compared and not r.tensors else "")
        )
        if r.first_divergent_step is not None:
            o.out.print(f"  first divergent fingerprint at step {r.first_divergent_step}")
    else:
        fields = ", ".join(d.field for d in diffs if d.matters)
        o.out.print(
            f"bitwise equality not expected ({fields} differ): tolerance comparison, "
            f"atol {r.atol:g}: {r.verdict}"
        )
    if r.tolerance:
        o.table(
            f"final weights vs recorded, atol {r.atol:g}",
            ["tensor", "max abs diff", "within"],
            [
                [
                    t.name,
                    "-" if t.max_abs_diff is None else f"{t.max_abs_diff:.3g}",
                    "yes" if t.within else "NO",
                ]
                for t in r.tolerance
            ],
        )
    elif r.tensors:
        o.table("final weights: tensors that differ", TENSOR_COLUMNS, _tensor_rows(r.tensors))


command.__doc__ = (command.__doc__ or "") + EXAMPLES
