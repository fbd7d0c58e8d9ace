"""Typed errors. The CLI maps each to one line + a hint + an exit code.

Exit codes (documented in the README):
    0 ok · 1 failure · 2 bad input/usage · 3 a check said no.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_CHECK_FAILED = 3


class ModelkitError(Exception):
    """Base class: a message, an optional hint, and the exit code the CLI uses."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


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


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for a close match, else an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str], *, hint: str) -> UnknownNameError:
    """Build the standard 'unknown X' error that lists choices and suggests a close match."""
    choices = sorted(choices)
    listed = ", ".join(choices) if choices else "(none)"
    return UnknownNameError(
        f"unknown {kind} '{name}'{did_you_mean(name, choices)} (valid: {listed})", hint=hint
    )
