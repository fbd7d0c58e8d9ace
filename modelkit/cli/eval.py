"""`modelkit eval`: evaluate a run on its held-out split."""

from __future__ import annotations

from typing import Annotated

import typer

from modelkit.cli import _output as o
from modelkit.cli._options import DataOpt, DeviceOpt, FormatOpt, OutputFormat, RunDirArg, SkipBadOpt
from modelkit.tasks import get_task

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

  modelkit eval runs/gpt --data text:notes.txt

  modelkit eval runs/my-gpt --data my_pkg.data:val_windows   # a loader yielding (x, y)
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
    """The run's task metrics (classification: accuracy, loss, per-class accuracy, confusion matrix; language modelling: perplexity, loss per token, bits per byte); saved as eval.json (training data) or evals/NAME.json (other data)."""
    from modelkit.project import load_project
    from modelkit.training.evaluate import evaluation_of_run

    ev = evaluation_of_run(
        run_dir,
        data=data,
        project=load_project(),
        device=device or "auto",
        skip_bad_files=skip_bad_files,
        trust_unrecorded=trust_unrecorded,
    )
    if fmt is OutputFormat.json:
        o.print_json(ev.to_dict())
        return

    task = get_task(ev.task)
    o.table(
        f"held-out evaluation of {run_dir} on {ev.data.spec} ({task.name})",
        ["metric", "value"],
        [list(row) for row in task.eval_rows(ev.to_dict())],
    )
    if ev.per_class_accuracy is not None:  # classification's breakdown
        o.table(
            "per-class accuracy",
            ["class", "accuracy"],
            [[c, "-" if a is None else f"{a:.4f}"] for c, a in ev.per_class_accuracy.items()],
        )
        classes = ev.classes or []
        o.table(
            "confusion matrix (rows: true, columns: predicted)",
            ["", *classes],
            [[c, *row] for c, row in zip(classes, ev.confusion_matrix or [], strict=True)],
        )
    o.success(f"wrote {ev.path}")


command.__doc__ = (command.__doc__ or "") + EXAMPLES
