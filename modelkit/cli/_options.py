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
