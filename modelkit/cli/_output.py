"""The only module that imports rich. Data goes to stdout, messages to stderr."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # typer >= 0.25 vendors click
    from typer._click import exceptions as _click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as _click_exc
from rich.table import Table

from modelkit.errors import EXIT_FAILURE, ModelkitError

out = Console(highlight=False, soft_wrap=True)  # stdout: data
err = Console(stderr=True, highlight=False, soft_wrap=True)  # stderr: messages

F = TypeVar("F", bound=Callable[..., Any])


def debug() -> bool:
    """True when ``MODELKIT_DEBUG=1``: tracebacks are shown."""
    return os.environ.get("MODELKIT_DEBUG", "") not in ("", "0")


def fail(message: str, *, hint: str | None = None, code: int = EXIT_FAILURE) -> typer.Exit:
    """Print one error line (+ hint) to stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        err.print(f"[dim]hint:[/] {escape(hint)}")
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Map ModelkitError to one line + hint + its exit code; hide tracebacks unless debugging."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except ModelkitError as exc:
            if debug():
                traceback.print_exc()
            raise fail(exc.message, hint=exc.hint, code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", code=130) from None
        except Exception as exc:
            if debug():
                traceback.print_exc()
            first = (str(exc).splitlines() or [""])[0]
            raise fail(
                f"unexpected {type(exc).__name__}: {first}",
                hint="re-run with MODELKIT_DEBUG=1 for the traceback, and report it",
            ) from None

    return wrapper  # type: ignore[return-value]


_NO_ARGS = getattr(_click_exc, "NoArgsIsHelpError", ())


class Group(TyperGroup):
    """The root command: usage errors (a bad option value, an unknown flag) print the same
    ``error:`` + ``hint:`` pair as every other bad input, exit 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except _click_exc.UsageError as exc:
            verb = exc.ctx.command_path if exc.ctx is not None else "modelkit"
            sys.exit(fail(exc.format_message(), hint=f"see `{verb} --help`", code=2).exit_code)
        except _click_exc.ClickException as exc:
            sys.exit(fail(exc.format_message(), code=exc.exit_code).exit_code)
        except typer.Abort:
            sys.exit(fail("aborted", code=1).exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def escape(text: str) -> str:
    """Escape rich markup in user-provided text."""
    from rich.markup import escape as _escape

    return _escape(str(text))


def print_json(obj: Any) -> None:
    """Machine output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, indent=2, default=str) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """A status message on stderr."""
    err.print(message)


def success(message: str) -> None:
    """A success message on stderr."""
    err.print(f"[bold green]✓[/] {message}")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    """Render a table on stdout."""
    t = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[escape(str(v)) for v in r])
    out.print(t)


@contextmanager
def training_progress(enabled: bool = True) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A rich progress bar fed by the training loop's events (loss and samples/s)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield lambda _e: None
        return
    progress = Progress(
        TextColumn("[bold]train[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[sps]} samples/s"),
        TextColumn("acc {task.fields[acc]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    task = None

    def on_event(event: dict[str, Any]) -> None:
        nonlocal task
        kind = event["kind"]
        if kind == "start":
            task = progress.add_task(
                "train", total=event["total_steps"], loss="-", sps="-", acc="-"
            )
        elif kind == "step" and task is not None:
            progress.update(
                task,
                completed=event["step"],
                loss=f"{event['loss']:.4f}",
                sps=f"{event['samples_per_second']:,.0f}",
            )
        elif kind == "epoch" and task is not None:
            progress.update(task, acc=f"{event['test_accuracy']:.4f}")

    with progress:
        yield on_event
