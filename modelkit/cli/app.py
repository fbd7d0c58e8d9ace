"""The `modelkit` command: wires the verbs together (each verb is one module in this package).

Imports nothing heavy: torch loads only inside a verb that needs it, so `--help` is instant.
"""

from __future__ import annotations

import importlib

import typer

from modelkit import __version__
from modelkit.cli._output import Group
from modelkit.training.distributed import exit_process

# verb name -> module in modelkit.cli (each defines `command`)
VERBS: dict[str, str] = {
    "init": "init",
    "train": "train",
    "eval": "eval",
    "repro": "repro",
    "benchmark": "benchmark",
    "card": "card",
    "release": "release",
    "verify": "verify",
    "models": "models",
}

app = typer.Typer(
    name="modelkit",
    cls=Group,
    help="A maintainer's toolkit for PyTorch model repositories: train, eval, repro, "
    "benchmark gates, model cards and verified releases.\n\n"
    "Exit codes: 0 ok · 1 failure · 2 bad input/usage · 3 a check said no.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for _name, _module in VERBS.items():
    _mod = importlib.import_module(f"modelkit.cli.{_module}")
    app.command(_name, help=_mod.command.__doc__, cls=getattr(_mod, "COMMAND_CLS", None))(
        _mod.command
    )


def _version(value: bool) -> None:
    if value:
        typer.echo(f"modelkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """modelkit."""


def main() -> None:
    """Console-script entry point."""

    try:
        app(prog_name="modelkit")
    except SystemExit as exc:
        exit_process(exc.code)  # a torchrun worker skips finalisation (see there)


if __name__ == "__main__":
    main()
