"""`modelkit release`: publish a run as an immutable, verified version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import FormatOpt, OutputFormat

if TYPE_CHECKING:
    from modelkit.release.reports import ReleasePlan, ReleaseResult

EXAMPLES = """
Examples:

  modelkit release v1.0 --dry-run                # the plan: files, sizes, LFS, card diff, tag

  modelkit release v1.0 --run runs/mnist --to hf://my-org/mnist-mlp

  modelkit release v1.1 --to ./registry          # local registry (HF cache layout, offline)

  modelkit release v1.2 --sign-key ~/keys/release.pem   # signed manifest (OpenSSF model-signing)
"""


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


@o.handle_errors
def command(
    version: Annotated[
        str, typer.Argument(help="Version tag: v1.2, v1.2.0, v2.0.0rc1.", show_default=False)
    ],
    run: Annotated[
        Path | None,
        typer.Option(
            "--run", help="Run directory (default: [tool.modelkit] run, else the latest)."
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="hf://ORG/NAME or a local registry folder (default: [tool.modelkit] hub, else ./registry).",
        ),
    ] = None,
    repo: Annotated[
        str | None, typer.Option("--repo", help="ORG/NAME inside a local registry.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    allow_dirty: Annotated[
        bool,
        typer.Option("--allow-dirty", help="Release from a git tree with uncommitted changes."),
    ] = False,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key",
            help="Elliptic-curve private key (PEM) to sign the manifest with (model-signing); "
            "password in MODELKIT_SIGN_KEY_PASSWORD. Never printed or stored.",
        ),
    ] = None,
    allow_incomplete_card: Annotated[
        bool,
        typer.Option(
            "--allow-incomplete-card",
            help="Publish a card whose hand-written sections are unfilled.",
        ),
    ] = False,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Package a run (weights, config, card, run record, eval, sha256 manifest), commit it atomically, tag it, verify it."""
    from modelkit.project import load_project
    from modelkit.release import release

    result = release(
        version, run_dir=run, target=to, repo_id=repo, project=load_project(),
        allow_dirty=allow_dirty, dry_run=dry_run, sign_key=sign_key,
        allow_incomplete_card=allow_incomplete_card,
    )  # fmt: skip
    if fmt is OutputFormat.json:
        o.print_json(result.to_dict())
    elif dry_run:
        _show_plan(result)
    else:
        _show_release(result, version)


command.__doc__ = (command.__doc__ or "") + EXAMPLES


def _show_plan(result: ReleasePlan) -> None:
    """What a dry run would publish: the files, the steps and the card's diff."""
    o.table(
        f"release {result.tag} of {result.run_dir} to {result.target} (dry run)",
        ["file", "size", "storage", "sha256"],
        [[f.path, _human(f.size), f.storage, f.sha256[:16] + "…"] for f in result.files],
    )
    for step in result.steps:
        o.info(f"would: {step}")
    o.info("card diff against the remote:" if result.card_diff else "card: unchanged")
    for line in result.card_diff:
        o.out.print(o.escape(line))
    if result.already_released:
        o.info(f"{result.tag} is already released with identical content: nothing to publish")
    o.success("dry run: nothing was changed")


def _show_release(result: ReleaseResult, version: str) -> None:
    """What was published and checked."""
    for line in result.log:
        o.info(line)
    if result.already_released:
        o.info(f"{version} was already released with identical content; verified it again")
    o.table(
        f"{result.target} @ {version} (commit {result.commit[:12]})",
        ["file", "size", "storage"],
        [[f.path, _human(f.size), f.storage] for f in result.files],
    )
    for check in result.checks:
        o.info(f"checked: {check}")
    signed = f", signed by {result.signer}" if result.signer else ""
    o.success(f"released {version}{signed}: hashes, sizes, tag and a clean-cache load verified")
