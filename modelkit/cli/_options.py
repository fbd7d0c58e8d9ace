"""Shared option aliases, so a flag means the same thing in every verb."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class OutputFormat(str, Enum):
    """How a verb prints its result."""

    text = "text"
    json = "json"


RunDirArg = Annotated[
    Path, typer.Argument(help="A run directory made by `modelkit train`.", show_default=False)
]
FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="text for people, json for machines.")
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Data spec: digits | mnist:PATH | imagefolder:PATH | project dataset | pkg.mod:loader.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Model: a registry name (see `modelkit models`) or pkg.mod:factory."
    ),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
SkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad-files", help="Skip undecodable images (counted in the run).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]

# the training recipe (see modelkit.training.optim / losses); tables go in a config file
OptimizerOpt = Annotated[
    str | None,
    typer.Option(help="Any torch.optim optimizer by name (adam, adamw, sgd, Adadelta, ...)."),
]
LrScheduleOpt = Annotated[
    str | None,
    typer.Option(
        help="none | cosine | step | any torch.optim.lr_scheduler name (e.g. OneCycleLR)."
    ),
]
LossOpt = Annotated[str | None, typer.Option(help="cross_entropy | nll | package.module:function.")]
GradClipOpt = Annotated[
    float | None, typer.Option(help="Clip the gradients' global L2 norm to this (0 = off).")
]
MaxStepsOpt = Annotated[
    int | None, typer.Option(help="Stop after this many optimizer steps (0 = all epochs).")
]
KeepBestOpt = Annotated[
    str | None,
    typer.Option(
        help="test_accuracy | test_loss: keep the best epoch's weights (best.safetensors)."
    ),
]
ImageSizeOpt = Annotated[
    int | None, typer.Option(help="Image folders: resize to this side (default 28).")
]
ChannelsOpt = Annotated[int | None, typer.Option(help="Image folders: 1 (grayscale) or 3 (RGB).")]
