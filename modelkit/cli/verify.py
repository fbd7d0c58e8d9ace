"""`modelkit verify`: re-download a release into a clean cache and check it."""

from __future__ import annotations

from typing import Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import FormatOpt, OutputFormat

EXAMPLES = """
Examples:

  modelkit verify hf://my-org/mnist-mlp@v1.2

  modelkit verify registry@v1.2 --eval           # also re-evaluate on the run's data

  modelkit verify ./registry@v1.0 --repo my-org/mnist-mlp --format json
"""


@o.handle_errors
def command(
    ref: Annotated[
        str,
        typer.Argument(help="TARGET@VERSION: hf://ORG/NAME@v1.2 or PATH@v1.2.", show_default=False),
    ],
    repo: Annotated[
        str | None, typer.Option("--repo", help="ORG/NAME inside a local registry.")
    ] = None,
    eval_: Annotated[
        bool,
        typer.Option("--eval", help="Re-evaluate the downloaded weights; must match eval.json."),
    ] = False,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Check a release: manifest hashes and sizes (remote and downloaded), weights load, optional re-eval (exit 3 on mismatch)."""
    from modelkit.project import load_project
    from modelkit.release.targets import parse_target, split_ref
    from modelkit.release.verify import verify_release

    project = load_project()
    spec, version = split_ref(ref)
    target = parse_target(spec, project=project, repo_id=repo, token_required=False)
    report = verify_release(target, version, project=project, evaluate=eval_)
    if fmt is OutputFormat.json:
        o.print_json(report)
        return
    o.table(
        f"{report['target']} @ {version} (commit {report['commit'][:12]})",
        ["file", "size"],
        [[k, f"{v:,}"] for k, v in report["files"].items()],
    )
    if "eval" in report:
        o.info(
            f"re-evaluated accuracy {report['eval']['accuracy']:.4f} == released {report['eval']['recorded']:.4f}"
        )
    o.success(
        f"verified {version}: {report['num_parameters']:,} parameters load, every hash matches"
    )


command.__doc__ = (command.__doc__ or "") + EXAMPLES
