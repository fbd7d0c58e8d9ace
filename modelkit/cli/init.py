"""`modelkit init`: scaffold a new model repository with the maintainer workflow built in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import FormatOpt, OutputFormat
from modelkit.scaffold import init_project

if TYPE_CHECKING:
    from modelkit.scaffold import InitResult

EXAMPLES = """
Examples:

  modelkit init digit-net                 # ./digit-net, package digit_net, git repo + commit

  modelkit init repos/my-model --name my-model

  modelkit init . --name my-model --force # add the scaffold to an existing folder (keeps files)

  modelkit init digit-net --no-git --format json

  modelkit init . --force                 # an existing repo: registers ITS model + script

  modelkit init . --force --model train:Net --script train.py
"""


# the verb's own options (shared ones live in modelkit.cli._options)
PathArg = Annotated[
    Path, typer.Argument(help="Directory to create (or an empty one).", show_default=False)
]
NameOpt = Annotated[
    str | None,
    typer.Option("--name", "-n", help="Project name (default: the directory's name)."),
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Scaffold into a non-empty directory; existing files are kept."),
]
GitOpt = Annotated[
    bool, typer.Option("--git/--no-git", help="git init + a first commit (new repos only).")
]
RequirementOpt = Annotated[
    str | None,
    typer.Option(
        "--modelkit-requirement",
        help="The project's modelkit dependency (default: where this modelkit came from).",
    ),
]
AdoptModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="With --force on an existing repository: its model as module:Class or "
        "module:factory (default: the one nn.Module subclass found in its code).",
    ),
]
ScriptOpt = Annotated[
    str | None,
    typer.Option(
        "--script", help="Its training script (default: the one found); make run runs it."
    ),
]


def _report(result: InitResult, path: Path) -> None:
    """The text summary of a scaffold: what was created, adopted and kept, git, what to run next."""
    o.success(
        f"created {result.name} (package {result.package}) in {result.root}: "
        f"{len(result.created)} files"
    )
    if result.adopted:
        a = result.adopted
        o.info(
            o.escape(
                f"registered your model {a.model_ref} as '{a.model_name}' in "
                "[tool.modelkit.models]"
                + (f"; training script: {a.script} (make run, make repro)" if a.script else "")
            )
        )
    for rel in result.kept:
        o.info(f"kept your existing {rel} (not overwritten; compare it with the template)")
    if result.git.committed:
        o.info("git: initialised, first commit made")
    elif result.git.note:
        o.info(f"git: {result.git.note}")
    o.info(f"next: cd {path} && make run && make test")


@o.handle_errors
def command(
    path: PathArg,
    name: NameOpt = None,
    force: ForceOpt = False,
    git: GitOpt = True,
    requirement: RequirementOpt = None,
    model: AdoptModelOpt = None,
    script: ScriptOpt = None,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Create a model repository: model, config, tests, benchmarks, CI workflows, pre-commit."""

    result = init_project(
        path,
        name=name,
        force=force,
        git=git,
        requirement=requirement,
        model=model,
        script=script,
    )
    if fmt is OutputFormat.json:
        o.print_json(result.to_dict())
        return
    _report(result, path)


command.__doc__ = (command.__doc__ or "") + EXAMPLES
