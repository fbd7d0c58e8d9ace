"""`modelkit verify`: re-download a release into a clean cache and check it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import FormatOpt, OutputFormat
from modelkit.release.signing import read_public_key

EXAMPLES = """
Examples:

  modelkit verify hf://my-org/mnist-mlp@v1.2

  modelkit verify registry@v1.2 --eval           # also re-evaluate on the run's data

  modelkit verify ./registry@v1.0 --repo my-org/mnist-mlp --format json

  modelkit verify hf://my-org/mnist-mlp@v1.2 --public-key release.pub   # signed by this key
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
    require_signature: Annotated[
        bool,
        typer.Option("--require-signature", help="Fail (exit 3) unless the release is signed."),
    ] = False,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="The signer's public key (PEM) you trust; the release must be signed by it.",
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Check a release: the tag vs the release record, manifest hashes and sizes (remote and downloaded), weights vs run.json, the signature, the weights load; optional re-eval (exit 3 on mismatch)."""
    from modelkit.project import load_project
    from modelkit.release.targets import parse_target, split_ref
    from modelkit.release.verify import verify_release

    project = load_project()
    spec, version = split_ref(ref)
    target = parse_target(spec, project=project, repo_id=repo, token_required=False)
    trusted = None if public_key is None else read_public_key(public_key)
    report = verify_release(
        target,
        version,
        project=project,
        evaluate=eval_,
        require_signature=require_signature or public_key is not None,
        public_key=trusted,
    )
    if fmt is OutputFormat.json:
        o.print_json(report.to_dict())
        return
    o.table(
        f"{report.target} @ {version} (commit {report.commit[:12]})",
        ["file", "size"],
        [[k, f"{v:,}"] for k, v in report.files.items()],
    )
    if report.eval is not None:
        ev = report.eval
        o.info(f"re-evaluated {ev.metric} {ev.value:.4f} == released {ev.recorded:.4f}")
    for check in report.checks:
        o.info(f"checked: {check}")
    signed = f"; signed by {report.signer}" if report.signer else "; not signed"
    o.success(f"verified {version}: {report.num_parameters:,} parameters load{signed}")


command.__doc__ = (command.__doc__ or "") + EXAMPLES
