"""`modelkit card`: write the model card (README.md) of a run from its facts."""

from __future__ import annotations

from typing import Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import FormatOpt, OutputFormat, RunDirArg

EXAMPLES = """
Examples:

  modelkit card runs/mnist                       # README.md + training_curves.png in the run

  modelkit card runs/mnist --repo my-org/mnist-mlp --version v1.2

  modelkit card runs/mnist --strict              # exit 3 while a section is still marked todo
"""


@o.handle_errors
def command(
    run_dir: RunDirArg,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo", help="ORG/NAME for the loading snippet (default: [tool.modelkit] hub)."
        ),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Release tag for the loading snippet (release fills it)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail (exit 3) on sections the tool cannot fill.")
    ] = False,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Write README.md: the run's facts (metadata + generated sections) merged with the hand-written sections of MODEL_CARD.md."""
    from modelkit.card import write_card
    from modelkit.project import load_project

    project = load_project()
    if repo is None and project.hub and project.hub.startswith("hf://"):
        repo = project.hub[len("hf://") :]
    result = write_card(run_dir, repo_id=repo, version=version, project=project, strict=strict)
    if fmt is OutputFormat.json:
        o.print_json(
            {
                "path": str(result.path),
                "todos": result.todos,
                "curves": str(result.curves) if result.curves else None,
                "metadata": result.metadata,
                "prose": str(result.prose) if result.prose else None,
            }
        )
        return
    o.success(f"wrote {result.path}" + (f" and {result.curves.name}" if result.curves else ""))
    if result.todos:
        o.info(
            "to write by hand: "
            + ", ".join(result.todos)
            + f" in {result.prose or 'MODEL_CARD.md'} (delete each `modelkit:todo` marker"
            " when done; --strict checks; release refuses until then)"
        )
    o.info(f"next: modelkit release vX.Y --run {run_dir} --dry-run")


command.__doc__ = (command.__doc__ or "") + EXAMPLES
