"""`modelkit train`: train a model into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import (
    DataOpt,
    DeviceOpt,
    FormatOpt,
    ModelOpt,
    OutputFormat,
    QuietOpt,
    SkipBadOpt,
)

EXAMPLES = """
Examples:

  modelkit train                                  # mnist-mlp on the bundled digits (offline)

  modelkit train --data mnist:../shared/data/mnist --out runs/mnist

  modelkit train -m small-cnn -d imagefolder:../shared/data/catsdogs --epochs 15

  modelkit train -c configs/mnist.toml --lr 1e-3  # a config file + overrides

  modelkit train -m my_pkg.models:build --data my_pkg.data:load

  modelkit train --deterministic --fingerprint-every 10 --out runs/a

  modelkit train --resume runs/a                  # continue a killed run, bitwise

  modelkit train --resume runs/a --fallback-checkpoint   # newest checkpoint is corrupt
"""


@o.handle_errors
def command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML or YAML config file.")
    ] = None,
    model: ModelOpt = None,
    data: DataOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training split.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam | adamw | sgd.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: DeviceOpt = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (0 = torch default).")] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option("--deterministic/--no-deterministic", help="Deterministic algorithms."),
    ] = None,
    fingerprint_every: Annotated[
        int | None,
        typer.Option(help="Steps between state fingerprints in metrics.jsonl (0 = off)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory to create.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the killed run in RUN_DIR from its newest good checkpoint.",
            metavar="RUN_DIR",
        ),
    ] = None,
    fallback_checkpoint: Annotated[
        bool,
        typer.Option(help="With --resume: if the newest checkpoint is corrupt, use the previous."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing non-empty --out run.")
    ] = False,
    skip_bad_files: SkipBadOpt = False,
    download: Annotated[
        bool, typer.Option(help="Download MNIST with torchvision (needs network).")
    ] = False,
    fmt: FormatOpt = OutputFormat.text,
    quiet: QuietOpt = False,
) -> None:
    """Train a model and write a run directory (config, run record, metrics, weights)."""
    import time

    from modelkit.config import resolve_config
    from modelkit.errors import BadInputError
    from modelkit.project import load_project
    from modelkit.training.loop import resume as resume_run
    from modelkit.training.loop import train

    project = load_project()
    if fallback_checkpoint and resume is None:
        raise BadInputError(
            "--fallback-checkpoint only applies with --resume",
            hint="modelkit train --resume RUN_DIR --fallback-checkpoint",
        )
    if resume is not None:
        given = (
            [
                name
                for name, value in dict(
                    config=config,
                    model=model,
                    data=data,
                    epochs=epochs,
                    batch_size=batch_size,
                    lr=lr,
                    optimizer=optimizer,
                    seed=seed,
                    device=device,
                    threads=threads,
                    deterministic=deterministic,
                    fingerprint_every=fingerprint_every,
                    out=out,
                ).items()
                if value is not None
            ]
            + (["overwrite"] if overwrite else [])
            + (["download"] if download else [])
        )
        if given:
            raise BadInputError(
                f"--resume takes the run's own config; --{given[0].replace('_', '-')} "
                "cannot be combined with it",
                hint=f"modelkit train --resume {resume}",
            )
        with o.training_progress(enabled=not quiet and fmt is OutputFormat.text) as on_event:
            record = resume_run(
                resume, project=project, fallback=fallback_checkpoint, on_event=on_event
            )
        out = resume
        if record.get("already_complete"):
            o.info(f"{resume} is already complete; nothing to resume")
        else:
            last = record["resumes"][-1]
            for bad in last["rejected_checkpoints"]:
                o.info(f"skipped corrupt checkpoint {bad['checkpoint']}: {bad['reason']}")
            o.info(
                f"resumed from step {last['from_step']} ({last['checkpoint'] or 'no checkpoint yet'})"
            )
        _render(record, out, fmt)
        return
    overrides = dict(
        model=model,
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        device=device,
        threads=threads,
        deterministic=deterministic,
        fingerprint_every=fingerprint_every,
        skip_bad_files=skip_bad_files or None,
    )
    cfg = resolve_config(config_file=config, overrides=overrides, project=project)
    out = (
        out
        or Path("runs")
        / f"{cfg.model.replace(':', '-').replace('.', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    with o.training_progress(enabled=not quiet and fmt is OutputFormat.text) as on_event:
        record = train(
            cfg, out=out, project=project, overwrite=overwrite, download=download, on_event=on_event
        )
    _render(record, out, fmt)


def _render(record: dict, out: Path, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        o.print_json({"run_dir": str(out), **record})
        return
    m = record["metrics"]
    o.success(f"run written to {out}")
    o.table(
        None,
        ["model", "data", "held-out accuracy", "loss", "samples/s", "train time"],
        [
            [
                record["model"],
                record["data"]["spec"],
                f"{m['test_accuracy']:.4f}",
                f"{m['test_loss']:.4f}",
                f"{record['samples_per_second']:,.0f}",
                f"{record['timings']['train_s']:.1f}s",
            ]
        ],
    )
    skipped = record["data"].get("skipped_files")
    if skipped:
        o.info(f"skipped {skipped} undecodable file(s) (listed in run.json)")
    o.info(f"next: modelkit eval {out}")


command.__doc__ = (command.__doc__ or "") + EXAMPLES
