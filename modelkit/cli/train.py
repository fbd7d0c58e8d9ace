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
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory to create.")
    ] = None,
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
    from modelkit.project import load_project
    from modelkit.training.loop import train

    project = load_project()
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
