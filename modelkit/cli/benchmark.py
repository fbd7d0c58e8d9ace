"""`modelkit benchmark`: run the benchmark suite, or gate a change against a ref or saved results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import DeviceOpt, FormatOpt, NumberOpt, OutputFormat, QuietOpt

EXAMPLES = """
Examples:

  modelkit benchmark                              # run benchmarks/ once, write results JSON

  modelkit benchmark --compare main               # PR gate: HEAD vs merge-base with main
                                                  # (instruction counts when valgrind is here)

  modelkit benchmark --compare main --mode time   # the timing lane (ABBA rounds, statistics)

  modelkit benchmark --compare main --accept 'test_train_step[mnist-mlp]:instructions'

  modelkit benchmark --compare v0.3.0 --max-time 600 --report-md bench.md

  modelkit benchmark --processes 5 --out base.json && modelkit benchmark --baseline base.json

  modelkit benchmark --compare main -m "not slow" --device cuda

Accept an intended change in a commit message between REF and HEAD (a trailer):

  Benchmark-Accept: test_train_step[mnist-mlp] instructions wider hidden layer

Exit codes: 0 no regression (or only accepted ones) · 3 regression · 1 a benchmark errored ·
2 bad input.
"""


@o.handle_errors
def command(
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="Ref to gate against (branch = its merge-base with HEAD, tag or commit).",
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help="Compare against saved results instead of re-running REF."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Accept a baseline from another machine.")
    ] = False,
    suite: Annotated[
        str | None, typer.Option("--suite", help="Benchmark folder or file (default benchmarks).")
    ] = None,
    markers: Annotated[
        str | None, typer.Option("--markers", "-m", help="pytest -m expression, e.g. 'not slow'.")
    ] = None,
    keyword: Annotated[str | None, typer.Option("-k", help="pytest -k expression.")] = None,
    device: DeviceOpt = None,
    max_time: Annotated[
        float | None, NumberOpt("--max-time", help="Time budget for --compare, seconds.", gt=0)
    ] = None,
    min_rounds: Annotated[
        int | None, NumberOpt(help="ABBA rounds before early stop.", ge=1)
    ] = None,
    max_rounds: Annotated[int | None, NumberOpt(help="Most ABBA rounds.", ge=1)] = None,
    threshold: Annotated[
        float | None, NumberOpt(help="Timing change that matters (0.03 = 3%).", ge=0)
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="instructions (callgrind counts, CPU) | time | auto (default: instructions on "
            "CPU when valgrind is installed, else time; always time on CUDA).",
        ),
    ] = None,
    instr_threshold: Annotated[
        float | None,
        typer.Option(
            "--instr-threshold",
            help="Instruction lane: a change of this fraction or more in instructions per call "
            "is flagged (default 0.005 = 0.5%; in (0, 1)).",
        ),
    ] = None,
    accept: Annotated[
        list[str] | None,
        typer.Option(
            "--accept",
            help="Accept an intended change: BENCH:METRIC (BENCH may be a glob; repeatable). "
            "Commit trailers 'Benchmark-Accept: BENCH METRIC [reason]' do the same.",
        ),
    ] = None,
    processes: Annotated[
        int, NumberOpt(help="Without --compare: processes to run (samples per benchmark).", ge=1)
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write HEAD's results (pytest-benchmark JSON)."),
    ] = None,
    report_md: Annotated[Path | None, typer.Option("--report-md", help="Markdown report.")] = None,
    report_json: Annotated[Path | None, typer.Option("--report-json", help="JSON report.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore cached results.")] = False,
    fmt: FormatOpt = OutputFormat.text,
    quiet: QuietOpt = False,
) -> None:
    """Run the benchmark suite; with --compare/--baseline, gate timings, memory and accuracy."""
    from modelkit.bench.compare import run_benchmark
    from modelkit.bench.config import parse_bench_config
    from modelkit.bench.report import COLUMNS, accepted_lines, headline, rows, write_reports
    from modelkit.errors import BadInputError
    from modelkit.project import load_project

    project = load_project()
    root = project.root or Path.cwd()
    if device not in (None, "cpu") and not str(device).startswith("cuda"):
        raise BadInputError(f"unknown device '{device}'", hint="use cpu, cuda or cuda:N")
    if processes < 1:
        raise BadInputError("--processes must be at least 1", hint="e.g. --processes 3")
    if mode is not None and mode not in ("auto", "instructions", "time"):
        raise BadInputError(f"unknown --mode '{mode}'", hint="use one of: instructions, time, auto")
    if instr_threshold is not None and not 0 < instr_threshold < 1:
        raise BadInputError(
            f"--instr-threshold must be in (0, 1), got {instr_threshold}",
            hint="a fraction: 0.005 flags a change of 0.5% or more in instructions per call",
        )
    cfg = parse_bench_config(
        project.benchmark,
        suite=suite,
        markers=markers,
        keyword=keyword,
        max_time=max_time,
        min_rounds=min_rounds,
        max_rounds=max_rounds,
        threshold=threshold,
        instr_threshold=instr_threshold,
    )
    show = not quiet and fmt is OutputFormat.text
    outcome = run_benchmark(
        root=root,
        cfg=cfg,
        device=device or "cpu",
        compare=compare,
        baseline=baseline,
        force=force,
        processes=processes,
        out=out or (None if (compare or baseline) else root / ".benchmarks" / "modelkit.json"),
        use_cache=not no_cache,
        mode=mode,
        accept=accept,
        on_event=(lambda m: o.info(f"[dim]{o.escape(m)}[/]")) if show else None,
    )
    written = write_reports(outcome, md=report_md, json_path=report_json)
    if fmt is OutputFormat.json:
        o.print_json(outcome.to_dict())
    else:
        for w in outcome.warnings:
            o.info(f"[yellow]warning:[/] {o.escape(w)}")
        o.table(
            None,
            COLUMNS,
            rows(outcome),
        )
        for line in accepted_lines(outcome):
            o.info(o.escape(line))
        if outcome.base is not None:
            o.info(headline(outcome))
        if outcome.results_file:
            o.info(f"results: {outcome.results_file}")
        for w in written:
            o.info(f"report: {w}")
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


command.__doc__ = (command.__doc__ or "") + EXAMPLES
