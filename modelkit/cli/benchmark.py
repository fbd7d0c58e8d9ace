"""`modelkit benchmark`: run the benchmark suite, or gate a change against a ref or saved results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from modelkit.bench.config import parse_bench_config
from modelkit.cli import _output as o
from modelkit.cli._options import DeviceOpt, FormatOpt, NumberOpt, OutputFormat, QuietOpt
from modelkit.errors import BadInputError

EXAMPLES = """
Examples:

  modelkit benchmark                              # run benchmarks/ once, write results JSON

  modelkit benchmark --compare                    # PR gate: HEAD vs its merge-base with the
                                                  # default branch (origin/HEAD, main or master)

  modelkit benchmark --compare main --mode time   # the timing lane (ABBA rounds, statistics)

  modelkit benchmark --compare main --accept 'test_train_step[mnist-mlp]:instructions'

  modelkit benchmark --compare v0.3.0 --max-time 600 --report-md bench.md --strict

  modelkit benchmark --processes 5 --out base.json && modelkit benchmark --baseline base.json

  modelkit benchmark --compare main -m "not slow" --device cuda

  modelkit benchmark --compare main --cache-key   # the key of REF's cached results (CI cache)

Accept an intended change in a commit message between REF and HEAD (a trailer; the benchmark
is matched literally, brackets included, '*' the only wildcard):

  Benchmark-Accept: test_train_step[mnist-mlp] instructions wider hidden layer

Exit codes: 0 no regression (or only accepted ones) · 3 regression, or a change beyond its
threshold the lane could not decide, or (--strict) a benchmark with nothing to judge ·
1 a benchmark errored · 2 bad input.
"""

DEFAULT_REF = "@default"  # what a bare --compare means (modelkit.bench.gate.DEFAULT_REF)


class BenchmarkCommand(TyperCommand):
    """``--compare`` may be given without a ref: then it means the default branch."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Insert the default-ref marker after a bare ``--compare``."""
        fixed: list[str] = []
        for i, arg in enumerate(args):
            fixed.append(arg)
            following = args[i + 1] if i + 1 < len(args) else None
            if arg == "--compare" and (following is None or following.startswith("-")):
                fixed.append(DEFAULT_REF)
        return super().parse_args(ctx, fixed)


COMMAND_CLS = BenchmarkCommand

CompareOpt = Annotated[str | None, typer.Option(
    "--compare", help="Ref to gate against (branch = its merge-base with HEAD, tag or commit); "
    "without a ref: the merge-base with the default branch (origin/HEAD, else main or master).",
)]  # fmt: skip
BaselineOpt = Annotated[
    Path | None,
    typer.Option("--baseline", help="Compare against saved results instead of re-running REF."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Accept a baseline from another machine.")]
SuiteOpt = Annotated[
    str | None, typer.Option("--suite", help="Benchmark folder or file (default benchmarks).")
]
MarkersOpt = Annotated[
    str | None, typer.Option("--markers", "-m", help="pytest -m expression, e.g. 'not slow'.")
]
KeywordOpt = Annotated[str | None, typer.Option("-k", help="pytest -k expression.")]
MaxTimeOpt = Annotated[
    float | None, NumberOpt("--max-time", help="Time budget for --compare, seconds.", gt=0)
]
MinRoundsOpt = Annotated[int | None, NumberOpt(help="ABBA rounds before early stop.", ge=1)]
MaxRoundsOpt = Annotated[int | None, NumberOpt(help="Most ABBA rounds.", ge=1)]
ThresholdOpt = Annotated[
    float | None, NumberOpt(help="Timing change that matters (0.03 = 3%).", ge=0)
]
ModeOpt = Annotated[
    str | None,
    typer.Option(
        "--mode",
        help="instructions (callgrind counts, CPU) | time | auto (default: instructions on "
        "CPU when valgrind is installed, else time; always time on CUDA).",
    ),
]
InstrOpt = Annotated[
    float | None,
    typer.Option(
        "--instr-threshold",
        help="Instruction lane: a change of this fraction or more in "
        "instructions per call is flagged (default 0.005 = 0.5%; in (0, 1)).",
    ),
]
AcceptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--accept",
        help="Accept an intended change: BENCH:METRIC (matched literally, '*' the only "
        "wildcard; repeatable). Commit trailers 'Benchmark-Accept: BENCH METRIC [reason]' do the "
        "same.",
    ),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict", help="Fail (exit 3) when a benchmark records nothing the gate can judge."
    ),
]
ProcessesOpt = Annotated[
    int, NumberOpt(help="Without --compare: processes to run (samples per benchmark).", ge=1)
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write HEAD's results (pytest-benchmark JSON).")
]
ReportMdOpt = Annotated[Path | None, typer.Option("--report-md", help="Markdown report.")]
ReportJsonOpt = Annotated[Path | None, typer.Option("--report-json", help="JSON report.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Ignore cached results.")]
CacheKeyOpt = Annotated[
    bool,
    typer.Option(
        "--cache-key",
        help="Print the cache key of REF's results (for CI's actions/cache) and exit.",
    ),
]


def _check_flags(device: str | None, mode: str | None, instr_threshold: float | None) -> None:

    if device not in (None, "cpu") and not str(device).startswith("cuda"):
        raise BadInputError(f"unknown device '{device}'", hint="use cpu, cuda or cuda:N")
    if mode is not None and mode not in ("auto", "instructions", "time"):
        raise BadInputError(f"unknown --mode '{mode}'", hint="use one of: instructions, time, auto")
    if instr_threshold is not None and not 0 < instr_threshold < 1:
        raise BadInputError(
            f"--instr-threshold must be in (0, 1), got {instr_threshold}",
            hint="a fraction: 0.005 flags a change of 0.5% or more in instructions per call",
        )


def _render(outcome: Any, written: list[str], fmt: OutputFormat) -> None:
    from modelkit.bench.report import COLUMNS, accepted_lines, headline, rows

    if fmt is OutputFormat.json:
        o.print_json(outcome.to_dict())
        return
    for w in outcome.warnings:
        o.info(f"[yellow]warning:[/] {o.escape(w)}")
    o.table(None, COLUMNS, rows(outcome))
    for line in [*accepted_lines(outcome), *outcome.reasons()]:
        o.info(o.escape(line))
    if outcome.base is not None:
        o.info(o.escape(headline(outcome)))
    else:
        o.info(o.escape(outcome.gpu_lane))
    if outcome.results_file:
        o.info(f"results: {outcome.results_file}")
    for w in written:
        o.info(f"report: {w}")


@o.handle_errors
def command(
    compare: CompareOpt = None, baseline: BaselineOpt = None, force: ForceOpt = False,
    suite: SuiteOpt = None, markers: MarkersOpt = None, keyword: KeywordOpt = None,
    device: DeviceOpt = None, max_time: MaxTimeOpt = None, min_rounds: MinRoundsOpt = None,
    max_rounds: MaxRoundsOpt = None, threshold: ThresholdOpt = None, mode: ModeOpt = None,
    instr_threshold: InstrOpt = None, accept: AcceptOpt = None, strict: StrictOpt = False,
    processes: ProcessesOpt = 1, out: OutOpt = None, report_md: ReportMdOpt = None,
    report_json: ReportJsonOpt = None, no_cache: NoCacheOpt = False,
    cache_key: CacheKeyOpt = False, fmt: FormatOpt = OutputFormat.text, quiet: QuietOpt = False,
) -> None:  # fmt: skip
    """Run the benchmark suite; with --compare/--baseline, gate timings, memory and quality."""
    from modelkit.bench.gate import base_cache_key, run_benchmark
    from modelkit.bench.report import write_reports
    from modelkit.project import load_project

    project = load_project()
    root = project.root or Path.cwd()
    _check_flags(device, mode, instr_threshold)
    cfg = parse_bench_config(
        project.benchmark, suite=suite, markers=markers, keyword=keyword, max_time=max_time,
        min_rounds=min_rounds, max_rounds=max_rounds, threshold=threshold,
        instr_threshold=instr_threshold,
    )  # fmt: skip
    if cache_key:
        typer.echo(base_cache_key(root=root, cfg=cfg, device=device or "cpu",
                                  compare=compare or DEFAULT_REF, mode=mode))  # fmt: skip
        return
    show = not quiet and fmt is OutputFormat.text
    outcome = run_benchmark(
        root=root, cfg=cfg, device=device or "cpu", compare=compare, baseline=baseline,
        force=force, processes=processes, use_cache=not no_cache, mode=mode, accept=accept,
        out=out or (None if (compare or baseline) else root / ".benchmarks" / "modelkit.json"),
        strict=strict, on_event=(lambda m: o.info(f"[dim]{o.escape(m)}[/]")) if show else None,
    )  # fmt: skip
    _render(outcome, write_reports(outcome, md=report_md, json_path=report_json), fmt)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


command.__doc__ = (command.__doc__ or "") + EXAMPLES
