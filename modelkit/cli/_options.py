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

# ---- `modelkit train` (TrainConfig keys; None = the config file's or the default) ----------
LAUNCH, SPEED = "Launch (torchrun)", "Precision and speed"
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML or YAML config file.")]
EpochsOpt = Annotated[int | None, typer.Option(help="Passes over the training split.")]
BatchSizeOpt = Annotated[int | None, typer.Option(help="Samples per step.")]
LrOpt = Annotated[float | None, typer.Option(help="Learning rate.")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="CPU threads (0 = torch default).")]
DeterministicOpt = Annotated[
    bool | None,
    typer.Option("--deterministic/--no-deterministic", help="Deterministic algorithms."),
]
FingerprintEveryOpt = Annotated[
    int | None, typer.Option(help="Steps between state fingerprints in metrics.jsonl (0 = off).")
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to create.")]
ResumeOpt = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue the killed run in RUN_DIR from its newest good checkpoint.",
        metavar="RUN_DIR",
    ),
]
FallbackOpt = Annotated[
    bool, typer.Option(help="With --resume: if the newest checkpoint is corrupt, use the previous.")
]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing non-empty --out run.")]
DownloadOpt = Annotated[bool, typer.Option(help="Download MNIST with torchvision (needs network).")]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help="fp32 | bf16 (autocast) | fp16 (autocast + grad scaler, CUDA only).",
        rich_help_panel=SPEED,
    ),
]
Tf32Opt = Annotated[
    bool | None,
    typer.Option(
        "--tf32/--no-tf32", help="TF32 matmuls on CUDA (default off).", rich_help_panel=SPEED
    ),
]
ChannelsLastOpt = Annotated[
    bool | None,
    typer.Option(
        "--channels-last/--no-channels-last",
        help="channels_last for conv nets on CUDA (default on).",
        rich_help_panel=SPEED,
    ),
]
CompileOpt = Annotated[
    bool | None,
    typer.Option("--compile/--no-compile", help="torch.compile the model.", rich_help_panel=SPEED),
]
DataPlacementOpt = Annotated[
    str,
    typer.Option(
        help="auto | device | host (pinned host batches, non-blocking copies; CUDA).",
        rich_help_panel=SPEED,
    ),
]
NprocOpt = Annotated[
    int | None,
    typer.Option(
        help="Processes on this node (one per GPU, or CPU cores); >1 runs torchrun + DDP.",
        rich_help_panel=LAUNCH,
    ),
]
NnodesOpt = Annotated[int | None, typer.Option(help="Number of nodes.", rich_help_panel=LAUNCH)]
NodeRankOpt = Annotated[
    int, typer.Option(help="This node's rank (0..nnodes-1).", rich_help_panel=LAUNCH)
]
MasterAddrOpt = Annotated[
    str, typer.Option(help="Rank 0's host (static rendezvous).", rich_help_panel=LAUNCH)
]
MasterPortOpt = Annotated[
    int | None,
    typer.Option(help="Rank 0's port (default: a free one, single node).", rich_help_panel=LAUNCH),
]
RdzvEndpointOpt = Annotated[
    str | None,
    typer.Option(
        help="HOST:PORT of a c10d rendezvous (elastic, multi-node) instead of master-addr/port.",
        rich_help_panel=LAUNCH,
    ),
]

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
