"""Typed errors with fields. The library says what is wrong, in API terms; the CLI adds which
flag to use (``modelkit/cli/_errors.py``) and prints one line + a hint + the exit code.

Exit codes (documented in the README):
    0 ok · 1 failure · 2 bad input/usage · 3 a check said no.

Every error carries its facts as attributes (``UnknownName.kind/.name/.choices``,
``WorldSizeMismatch.saved/.now``, ...), so code that handles an error branches on its type and
fields, never on its wording. ``ModelkitError(message, hint=...)`` stays valid for a one-off.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_CHECK_FAILED = 3


class ModelkitError(Exception):
    """Base class: a message, an optional hint, the exit code, and the error's fields.

    Subclasses with fields build their message and hint from them (:meth:`describe`); any
    keyword argument a subclass does not declare is kept in :attr:`fields` too.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, message: str | None = None, *, hint: str | None = None, **fields: Any):
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)
        described, default_hint = self.describe() if message is None else (message, None)
        super().__init__(described)
        self.message = described
        self.hint = hint if hint is not None else default_hint

    def describe(self) -> tuple[str, str | None]:
        """``(message, hint)`` from the fields (subclasses with fields override it)."""
        return type(self).__name__, None

    def __str__(self) -> str:
        return self.message

    def with_context(self, prefix: str) -> ModelkitError:
        """Prefix the message with where it happened (a file, a rank), once; returns self."""
        if not self.message.startswith(prefix):
            self.message = f"{prefix}{self.message}"
            self.args = (self.message,)
        return self

    def add_hint(self, note: str) -> ModelkitError:
        """Append ``note`` to the hint; returns self."""
        self.hint = f"{self.hint}; {note}" if self.hint else note
        return self


class BadInputError(ModelkitError):
    """The user asked for something that cannot work as given (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInputError):
    """A config file, override or ``[tool.modelkit]`` table is invalid."""


class UnknownNameError(BadInputError):
    """A name was not found in a registry."""


class DataError(BadInputError):
    """A dataset is missing, malformed or corrupt."""


class RunDirError(BadInputError):
    """A run directory is missing, incomplete or would be overwritten."""


class TrainingError(ModelkitError):
    """Training failed (for example a non-finite loss)."""


class CheckFailed(ModelkitError):
    """A check said no: regression, reproducibility mismatch, failed verification (exit 3)."""

    exit_code = EXIT_CHECK_FAILED


class UnknownName(UnknownNameError):
    """``kind`` named ``name`` is not one of ``choices`` (a model, a data spec, a task, ...)."""

    kind: str
    name: str
    choices: list[str]

    def __init__(
        self, kind: str, name: str, choices: Iterable[str], *, hint: str | None = None
    ) -> None:
        super().__init__(hint=hint, kind=kind, name=name, choices=sorted(choices))

    def describe(self) -> tuple[str, str | None]:
        listed = ", ".join(self.choices) if self.choices else "(none)"
        return (
            f"unknown {self.kind} '{self.name}'{did_you_mean(self.name, self.choices)} "
            f"(valid: {listed})",
            None,
        )


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for a close match, else an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str], *, hint: str) -> UnknownName:
    """The standard 'unknown X' error that lists choices and suggests a close match."""
    return UnknownName(kind, name, choices, hint=hint)
