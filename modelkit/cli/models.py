"""`modelkit models`: list the models and data specs you can use."""

from __future__ import annotations

from modelkit.cli import _output as o
from modelkit.cli._options import FormatOpt, OutputFormat
from modelkit.data import list_data_sources
from modelkit.models import list_models

EXAMPLES = """
Examples:

  modelkit models

  modelkit models --format json
"""


@o.handle_errors
def command(fmt: FormatOpt = OutputFormat.text) -> None:
    """List registered models (built-in and [tool.modelkit.models]) and data specs."""
    from modelkit.project import load_project

    project = load_project()
    models = list_models(project)
    data = list_data_sources(project)
    if fmt is OutputFormat.json:
        o.print_json(
            {
                "models": {
                    n: {
                        "description": e.description,
                        "source": e.source,
                        "input_shape": e.input_shape,
                        "default_data": e.default_data,
                        "task": e.task,
                    }
                    for n, e in sorted(models.items())
                },
                "data": data,
            }
        )
        return
    o.table(
        "models",
        ["name", "task", "source", "input", "description"],
        [
            [
                n,
                e.task or "-",
                e.source,
                "x".join(map(str, e.input_shape)) if e.input_shape else "-",
                e.description,
            ]
            for n, e in sorted(models.items())
        ],
    )
    o.table("data specs", ["spec", "description"], [[k, v] for k, v in data.items()])
    o.info("any package.module:factory works as --model, and package.module:loader as --data")


command.__doc__ = (command.__doc__ or "") + EXAMPLES
