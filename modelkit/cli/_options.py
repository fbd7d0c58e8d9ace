"""Shared option aliases, so a flag means the same thing in every verb."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer


def _bounds_text(ge: float | None, gt: float | None, le: float | None) -> str:
    parts = [f"{op} {v}" for op, v in ((">=", ge), (">", gt), ("<=", le)) if v is not None]
    return " and ".join(parts)


def in_range(
    *, ge: float | None = None, gt: float | None = None, le: float | None = None
) -> Callable[[Any], Any]:
    """An option callback: the value (when given) must be finite and within the bounds.

    click's own ranges let NaN through (every comparison with NaN is false) and have no
    open bounds; this is the one check every numeric option of every verb uses.
    """
    bounds = _bounds_text(ge, gt, le)

    def check(value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number {bounds} (got {value})".strip())
        if (
            (ge is not None and value < ge)
            or (gt is not None and value <= gt)
            or (le is not None and value > le)
        ):
            raise typer.BadParameter(f"must be {bounds} (got {value})")
        return value

    return check


def NumberOpt(  # noqa: N802 (reads like typer.Option)
    *decls: str,
    help: str,  # noqa: A002 (typer's name)
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    **kwargs: Any,
) -> Any:
    """``typer.Option`` for a number: its range is checked (NaN and inf refused) and shown."""
    bounds = _bounds_text(ge, gt, le)
    return typer.Option(
        *decls, help=f"{help} [{bounds}]", callback=in_range(ge=ge, gt=gt, le=le), **kwargs
    )


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
DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def _device(value: str | None) -> str | None:
    if value is not None and not DEVICE_RE.match(value):
        raise typer.BadParameter(f"unknown device '{value}' (valid: auto, cpu, cuda, cuda:N)")
    return value


DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="auto | cpu | cuda | cuda:N.", callback=_device)
]
SkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad-files", help="Skip undecodable images (counted in the run).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]

# ---- `modelkit train` (TrainConfig keys; None = the config file's or the default) ----------
LAUNCH, SPEED = "Launch (torchrun)", "Precision and speed"
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML or YAML config file.")]
EpochsOpt = Annotated[int | None, NumberOpt(help="Passes over the training split.", ge=1)]
BatchSizeOpt = Annotated[int | None, NumberOpt(help="Samples per step.", ge=1)]
LrOpt = Annotated[float | None, NumberOpt(help="Learning rate.", gt=0)]
SeedOpt = Annotated[int | None, NumberOpt(help="Random seed.", ge=0, le=2**32 - 1)]
ThreadsOpt = Annotated[int | None, NumberOpt(help="CPU threads (0 = torch default).", ge=0)]
DeterministicOpt = Annotated[
    bool | None,
    typer.Option("--deterministic/--no-deterministic", help="Deterministic algorithms."),
]
FingerprintEveryOpt = Annotated[
    int | None,
    NumberOpt(help="Steps between state fingerprints in metrics.jsonl (0 = off).", ge=0),
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
    NumberOpt(
        help="Processes on this node (one per GPU, or CPU cores); >1 runs torchrun + DDP.",
        ge=1,
        rich_help_panel=LAUNCH,
    ),
]
ShardOpt = Annotated[
    bool | None,
    typer.Option(
        "--shard/--no-shard",
        help="Shard parameters, gradients and optimizer state across the processes (FSDP2) "
        "instead of replicating them (DDP); needs --nproc-per-node >= 2.",
        rich_help_panel=LAUNCH,
    ),
]
NnodesOpt = Annotated[int | None, NumberOpt(help="Number of nodes.", ge=1, rich_help_panel=LAUNCH)]
NodeRankOpt = Annotated[
    int, NumberOpt(help="This node's rank (0..nnodes-1).", ge=0, rich_help_panel=LAUNCH)
]
MasterAddrOpt = Annotated[
    str, typer.Option(help="Rank 0's host (static rendezvous).", rich_help_panel=LAUNCH)
]
MasterPortOpt = Annotated[
    int | None,
    NumberOpt(
        help="Rank 0's port (default: a free one, single node).",
        ge=1,
        le=65535,
        rich_help_panel=LAUNCH,
    ),
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
    float | None, NumberOpt(help="Clip the gradients' global L2 norm to this (0 = off).", ge=0)
]
MaxStepsOpt = Annotated[
    int | None, NumberOpt(help="Stop after this many optimizer steps (0 = all epochs).", ge=0)
]
KeepBestOpt = Annotated[
    str | None,
    typer.Option(
        help="test_<metric> of the task (test_accuracy, test_loss, test_perplexity): keep the best epoch's weights."
    ),
]
MaxShardSizeOpt = Annotated[
    str | None,
    typer.Option(
        help="Save the final weights in shards above this size (5GB: the Hub's default; "
        "200MB, 10KB or a byte count)."
    ),
]
ImageSizeOpt = Annotated[
    int | None, NumberOpt(help="Image folders: resize to this side (default 28).", ge=1)
]
ChannelsOpt = Annotated[
    int | None, NumberOpt(help="Image folders: 1 (grayscale) or 3 (RGB).", ge=1, le=3)
]
