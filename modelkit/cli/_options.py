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
