"""The only module that imports rich. Data goes to stdout, messages to stderr."""

from __future__ import annotations

import errno
import functools
import json
import os
import re
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

from modelkit.errors import EXIT_BAD_INPUT, EXIT_FAILURE, ModelkitError
from modelkit.tasks import get_task
from modelkit.training.events import ProgressEvent

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
            from modelkit.cli._errors import cli_wording

            message, hint = cli_wording(exc)
            raise fail(message, hint=hint, code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", code=130) from None
        except Exception as exc:
            mapped = describe_os_error(exc)
            if mapped is None:
                raise _unexpected(exc) from None
            if debug():
                traceback.print_exc()
            message, hint, code = mapped
            raise fail(message, hint=hint, code=code) from None

    return wrapper  # type: ignore[return-value]


def _unexpected(exc: BaseException) -> typer.Exit:
    if debug():
        traceback.print_exc()
    first = (str(exc).splitlines() or [""])[0]
    return fail(
        f"unexpected {type(exc).__name__}: {first}",
        hint="re-run with MODELKIT_DEBUG=1 for the traceback, and report it",
    )


# errno -> (exit code, what happened, the next step). Bad input (2): the path the user gave
# cannot be used as given; environment (1): the machine must change (space, limits, disk).
OS_ERRORS: dict[int, tuple[int, str, str]] = {
    errno.ENOSPC: (EXIT_FAILURE, "no space left on device", "free some space, then run it again"),
    errno.EDQUOT: (EXIT_FAILURE, "disk quota exceeded", "free some space, then run it again"),
    errno.EMFILE: (
        EXIT_FAILURE,
        "too many open files",
        "raise the limit (ulimit -n 4096), then run it again",
    ),
    errno.ENFILE: (EXIT_FAILURE, "too many open files in the system", "close some programs"),
    errno.EIO: (EXIT_FAILURE, "input/output error", "check the disk, then run it again"),
    errno.ENOMEM: (EXIT_FAILURE, "out of memory", "free memory or use smaller batches"),
    errno.EROFS: (EXIT_BAD_INPUT, "read-only file system", "choose a path on a writable disk"),
    errno.EACCES: (
        EXIT_BAD_INPUT,
        "permission denied",
        "check its permissions or choose another path",
    ),
    errno.EPERM: (
        EXIT_BAD_INPUT,
        "operation not permitted",
        "check its permissions or choose another path",
    ),
    errno.ENOTDIR: (
        EXIT_BAD_INPUT,
        "a part of the path is a file, not a directory",
        "check the path",
    ),
    errno.EISDIR: (EXIT_BAD_INPUT, "is a directory, not a file", "give the path of a file"),
    errno.ENOENT: (EXIT_BAD_INPUT, "no such file or directory", "check the path"),
    errno.EEXIST: (EXIT_BAD_INPUT, "already exists", "choose another path"),
    errno.ENOTEMPTY: (EXIT_BAD_INPUT, "directory not empty", "choose an empty or new directory"),
    errno.ENAMETOOLONG: (EXIT_BAD_INPUT, "file name too long", "choose a shorter path"),
    errno.ELOOP: (EXIT_BAD_INPUT, "too many levels of symbolic links", "check the path"),
    errno.EXDEV: (EXIT_FAILURE, "cannot move across file systems", "keep the paths on one disk"),
}


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _os_cause(exc: BaseException) -> OSError | None:
    """The OS error behind another exception: one in its ``__cause__`` chain, or the
    ``(os error N)`` that Rust-backed libraries (safetensors, tokenizers) put in the message."""
    seen: set[int] = set()
    inner: BaseException | None = exc
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, OSError) and inner.errno is not None:
            return inner
        inner = inner.__cause__  # explicit `raise ... from err` only: a context may be unrelated
    match = _RUST_OS_ERROR.search(str(exc))
    if match:
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    return None


def describe_os_error(exc: BaseException) -> tuple[str, str, int] | None:
    """``(message, hint, exit code)`` for an OS or decoding error, None for anything else.

    The message names the path(s) involved; a ValueError that is not a decoding error
    (JSON included) is not claimed here.
    """
    import json

    if isinstance(exc, UnicodeDecodeError):
        return (
            f"cannot decode text as UTF-8 ({exc.reason} at byte {exc.start})",
            "a file (or file name) you gave is not UTF-8: re-save or rename it",
            EXIT_BAD_INPUT,
        )
    if isinstance(exc, json.JSONDecodeError):
        return (
            f"a JSON file is not valid JSON: {exc}",
            "the file was changed by hand or is corrupt; restore it",
            EXIT_BAD_INPUT,
        )
    if not isinstance(exc, OSError) or exc.errno is None:
        cause = _os_cause(exc)
        if cause is None:
            return None
        exc = cause
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    code, what, hint = OS_ERRORS.get(
        exc.errno,
        (
            EXIT_FAILURE,
            exc.strerror or errno.errorcode.get(exc.errno, "OS error"),
            "check the path",
        ),
    )
    return (f"{paths}: {what}" if paths else what, hint, code)


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
            sys.exit(fail(_usage_message(exc), hint=f"see `{verb} --help`", code=2).exit_code)
        except _click_exc.ClickException as exc:
            sys.exit(fail(exc.format_message(), code=exc.exit_code).exit_code)
        except typer.Abort:
            sys.exit(fail("aborted", code=1).exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_message(exc: Any) -> str:
    """``--epochs must be >= 1 (got 0)`` for a bad option value; click's text otherwise."""
    param = getattr(exc, "param", None)
    missing = isinstance(exc, _click_exc.MissingParameter)
    if isinstance(exc, _click_exc.BadParameter) and param is not None and not missing:
        opts = getattr(param, "opts", None) or [param.name or "value"]
        name = max(opts, key=len) if opts[0].startswith("-") else opts[0].upper()
        sep = " " if exc.message.startswith("must ") else ": "
        return f"{name}{sep}{exc.message}"
    return exc.format_message()


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
def training_progress(enabled: bool = True) -> Iterator[Callable[[ProgressEvent], None]]:
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
        TextColumn("{task.fields[sps]} {task.fields[unit]}/s"),
        TextColumn("{task.fields[metric]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )

    task = None
    kind_of_model = get_task(None)

    def on_event(event: ProgressEvent) -> None:
        nonlocal task, kind_of_model
        kind = event.kind
        if kind == "start":
            kind_of_model = get_task(event.task)  # what the held-out metric is
            task = progress.add_task(
                "train", total=event.total_steps, loss="-", sps="-", metric="",
                unit=kind_of_model.unit,
            )  # fmt: skip
        elif kind == "step" and task is not None:
            progress.update(
                task,
                completed=event.step,
                loss=f"{event.loss:.4f}",
                sps=f"{event.samples_per_second if event.per_second is None else event.per_second:,.0f}",
            )
        elif kind == "epoch" and task is not None:
            progress.update(task, metric=kind_of_model.progress(event.row))

    with progress:
        yield on_event
