"""`modelkit eval`: evaluate a run on its held-out split."""

from __future__ import annotations

from typing import Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import DataOpt, DeviceOpt, FormatOpt, OutputFormat, RunDirArg, SkipBadOpt

TrustUnrecordedOpt = Annotated[
    bool,
    typer.Option(
        "--trust-unrecorded",
        help="Evaluate weights whose run.json records no weights_sha256 (unchecked).",
    ),
]

EXAMPLES = """
Examples:

  modelkit eval runs/quickstart

  modelkit eval runs/mnist --format json | jq .accuracy

  modelkit eval runs/mnist --data mnist:/data/other-mnist
"""


@o.handle_errors
def command(
    run_dir: RunDirArg,
    data: DataOpt = None,
    device: DeviceOpt = None,
    skip_bad_files: SkipBadOpt = False,
    fmt: FormatOpt = OutputFormat.text,
    trust_unrecorded: TrustUnrecordedOpt = False,
) -> None:
    """Accuracy, loss, per-class accuracy and confusion matrix; saved as eval.json."""
    from modelkit.project import load_project
    from modelkit.training.evaluate import evaluate_run

    result = evaluate_run(
        run_dir,
        data=data,
        project=load_project(),
        device=device or "auto",
        skip_bad_files=skip_bad_files,
        trust_unrecorded=trust_unrecorded,
    )
    if fmt is OutputFormat.json:
        o.print_json(result)
        return
    o.table(
        f"held-out evaluation of {run_dir} on {result['data']['spec']}",
        ["metric", "value"],
        [
            ["accuracy", f"{result['accuracy']:.4f}"],
            ["loss", f"{result['loss']:.4f}"],
            ["samples", result["samples"]],
        ],
    )
    o.table(
        "per-class accuracy",
        ["class", "accuracy"],
        [[c, "-" if a is None else f"{a:.4f}"] for c, a in result["per_class_accuracy"].items()],
    )
    classes = result["classes"]
    o.table(
        "confusion matrix (rows: true, columns: predicted)",
        ["", *classes],
        [[c, *row] for c, row in zip(classes, result["confusion_matrix"], strict=True)],
    )
    o.success(f"wrote {run_dir}/eval.json")


command.__doc__ = (command.__doc__ or "") + EXAMPLES
