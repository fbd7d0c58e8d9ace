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
import signal as _signal
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


# ---- the five outcomes (exit codes) -----------------------------------------------------------
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


# ---- typed errors with fields ------------------------------------------------------------------
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


class NotImportable(BadInputError):
    """The reference ``reference`` (``module:attr``) of a ``what`` (a model, a data loader, a
    loss...) cannot be imported: ``cause``; ``package`` is the distribution that provides it."""

    reference: str
    what: str
    cause: str
    package: str | None

    def __init__(
        self,
        reference: str,
        cause: str,
        *,
        what: str = "object",
        package: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(hint=hint, reference=reference, cause=cause, what=what, package=package)

    def describe(self) -> tuple[str, str | None]:
        module = self.reference.partition(":")[0]
        provider = f" (provided by {self.package})" if self.package else ""
        return (
            f"cannot import {self.what} '{self.reference}'{provider}: {self.cause}",
            f"make {module} importable (run from its folder or project root, or pip install it)",
        )


class ModelNotImportable(NotImportable):
    """A model's reference cannot be imported (see :class:`NotImportable`)."""

    def __init__(
        self, reference: str, cause: str, *, package: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(reference, cause, what="model", package=package, hint=hint)


class NotRecordable(BadInputError):
    """Argument ``argument`` (a ``type_name``) of model ``reference`` cannot be stored as JSON
    nor rebuilt as a config object (transformers config, dataclass, pydantic model, Namespace)."""

    def __init__(self, reference: str, argument: str, type_name: str, *, cause: str = "") -> None:
        super().__init__(reference=reference, argument=argument, type_name=type_name, cause=cause)

    def describe(self) -> tuple[str, str | None]:
        why = f": {self.cause}" if self.cause else ""
        return (
            f"argument '{self.argument}' of {self.reference} ({self.type_name}) cannot be "
            f"recorded{why}",
            "pass numbers, strings, lists, dicts or a config object (a transformers config, "
            "a dataclass, a pydantic model); or a reference= to a factory taking such values",
        )


class WorldSizeMismatch(BadInputError):
    """A checkpoint or run written by ``saved`` processes is resumed with ``now``."""

    saved: int
    now: int

    def __init__(self, saved: int, now: int, *, what: str = "the run") -> None:
        super().__init__(saved=saved, now=now, what=what)

    def describe(self) -> tuple[str, str | None]:
        return (
            f"{self.fields['what']} was written by {self.saved} process(es); "
            f"this one has {self.now}",
            f"resume with {self.saved} process(es), the same world size",
        )


class ShardingUnsupported(BadInputError):
    """Sharded (FSDP2) training cannot run as asked; ``reason``: processes | torch | option."""

    reason: str

    def __init__(self, reason: str, detail: str, *, option: str | None = None) -> None:
        super().__init__(reason=reason, detail=detail, option=option)

    def describe(self) -> tuple[str, str | None]:
        hint = {
            "processes": "start it under torchrun with 2 or more processes (world size >= 2)",
            "torch": "install torch >= 2.8 (fully_shard, DCP's HuggingFaceStorageWriter)",
        }
        return f"sharded training: {self.fields['detail']}", hint.get(self.reason)


class FileMissing(RunDirError):
    """``path`` (a ``what``: a run file, a shard, a weights file) does not exist."""

    path: str
    what: str

    def __init__(self, path: Any, *, what: str = "file", hint: str | None = None) -> None:
        super().__init__(hint=hint, path=str(path), what=what)

    def describe(self) -> tuple[str, str | None]:
        return f"{self.what} not found: {self.path}", None


class IntegrityError(CheckFailed):
    """``path``'s content does not match its record (``record``: run.json, a manifest...):
    ``expected`` vs ``actual`` sha256."""

    path: str
    expected: str
    actual: str
    record: str

    def __init__(
        self,
        path: Any,
        *,
        expected: str,
        actual: str,
        record: str = "its record",
        hint: str | None = None,
    ) -> None:
        super().__init__(hint=hint, path=str(path), expected=expected, actual=actual, record=record)

    def describe(self) -> tuple[str, str | None]:
        return (
            f"{self.path} sha256 {self.actual[:12]}… does not match {self.record} "
            f"({self.expected[:12]}…)",
            "the file was modified after it was written; restore it or make it again",
        )


class UserCodeError(ModelkitError):
    """A user callable (``what`` ``name``: a loader, loss, factory, metric...) raised ``cause``.

    Exit 1 (the user's code failed, not modelkit); the traceback with ``MODELKIT_DEBUG=1``.
    """

    what: str
    name: str
    cause: str

    def __init__(self, what: str, name: str, cause: BaseException | str) -> None:
        text = (
            f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(cause)
        )
        super().__init__(what=what, name=name, cause=(text.splitlines() or [""])[0])

    def describe(self) -> tuple[str, str | None]:
        return (
            f"{self.what} {self.name} raised {self.cause}",
            "fix that function; set MODELKIT_DEBUG=1 for its traceback",
        )


class Interrupted(ModelkitError):
    """A signal (``SIGINT``/``SIGTERM``) stopped a verb; the processes it started were stopped
    with it. Exit 128 + the signal's number (130, 143), like a shell."""

    signal: str

    def __init__(self, signal: str) -> None:
        super().__init__(signal=signal)
        self.exit_code = 128 + int(getattr(_signal.Signals, signal, _signal.SIGTERM))

    def describe(self) -> tuple[str, str | None]:
        return (
            f"interrupted by {self.signal}: the processes it started were stopped and its "
            "temporary files removed",
            "run it again when you are ready",
        )


class InvalidArgument(BadInputError):
    """An API argument ``name`` got ``value``; it ``expected`` something else (exit 2)."""

    name: str
    expected: str

    def __init__(self, name: str, value: Any, expected: str, *, hint: str | None = None) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        super().__init__(hint=hint, name=name, value=shown, expected=expected)

    def describe(self) -> tuple[str, str | None]:
        return f"{self.name} must be {self.expected}, got {self.fields['value']}", None


class CheckpointMismatch(BadInputError):
    """The checkpoint ``checkpoint`` does not fit the live ``what`` (the model, or an
    optimizer): ``problems`` lists what differs. Exit 2; nothing was loaded."""

    checkpoint: str
    what: str
    problems: list[str]

    def __init__(self, checkpoint: str, *, what: str, problems: list[str]) -> None:
        super().__init__(checkpoint=checkpoint, what=what, problems=list(problems))

    def describe(self) -> tuple[str, str | None]:
        return (
            f"{self.checkpoint} does not fit the {self.what}: {'; '.join(self.problems)}",
            "resume with the model and optimizer the run was started with, or start a new run",
        )


class WriteFailed(ModelkitError):
    """Writing ``path`` failed with the OS error ``reason`` (a full disk, a read-only file
    system); nothing was left half-written. Exit 1."""

    path: str
    reason: str

    def __init__(self, path: Any, reason: str, *, hint: str | None = None) -> None:
        super().__init__(hint=hint, path=str(path), reason=reason)

    def describe(self) -> tuple[str, str | None]:
        return (
            f"cannot write {self.path}: {self.reason[:1].lower()}{self.reason[1:]}",
            "free some space (or fix permissions), then run it again; nothing was half-written",
        )


class NoWeights(RunDirError):
    """``directory`` holds no weights: neither ``model.safetensors`` nor a sharded layout."""

    directory: str

    def __init__(self, directory: Any, *, hint: str | None = None) -> None:
        super().__init__(hint=hint, directory=str(directory))

    def describe(self) -> tuple[str, str | None]:
        return (
            f"{self.directory} holds no weights (model.safetensors, or "
            "model.safetensors.index.json + model-0000k-of-0000n.safetensors shards)",
            "pass a finished run or release directory; run.finish(model) writes the weights",
        )


class WeightsLayoutError(RunDirError):
    """The weights in ``directory`` are malformed: ``file`` (a shard, the index, or None for
    the layout as a whole) has ``problem``. Exit 2."""

    directory: str
    file: str | None
    problem: str

    def __init__(
        self, directory: Any, *, problem: str, file: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(hint=hint, directory=str(directory), file=file, problem=problem)

    def describe(self) -> tuple[str, str | None]:
        where = f"{self.directory}/{self.file}" if self.file else str(self.directory)
        return (
            f"{where}: {self.problem}",
            "the weights are damaged or incomplete; restore the directory or save the weights "
            "again",
        )


class ShardMissing(WeightsLayoutError):
    """The index of ``directory`` maps tensors to ``file``, which is not there."""

    def __init__(self, directory: Any, *, file: str) -> None:
        super().__init__(directory, file=file, problem="shard named by the index is missing")


class UnexpectedShard(WeightsLayoutError):
    """``file`` in ``directory`` looks like a weights file but the layout does not name it."""

    def __init__(self, directory: Any, *, file: str, layout: str) -> None:
        super().__init__(directory, file=file, problem=f"is not part of the weights ({layout})")
        self.fields["layout"] = layout

    def describe(self) -> tuple[str, str | None]:
        message, _ = super().describe()
        return message, "remove the stray file, or restore the layout it belongs to"


class UnrecordedWeights(RunDirError):
    """``directory``'s run.json records no sha256 for its weights, so they cannot be checked."""

    directory: str

    def __init__(self, directory: Any) -> None:
        super().__init__(directory=str(directory))

    def describe(self) -> tuple[str, str | None]:
        return (
            f"{self.directory} records no weights_sha256 for its weights, so they cannot be "
            "checked",
            "pass trust_unrecorded=True only if you trust these weights",
        )


class WeightsMismatch(BadInputError):
    """The weights do not fit ``model`` (a reference): ``missing``/``unexpected`` keys and
    ``shapes`` (``name: stored vs model``) that differ. Exit 2."""

    model: str
    missing: list[str]
    unexpected: list[str]
    shapes: list[str]

    def __init__(
        self,
        model: str,
        *,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        shapes: Iterable[str] = (),
    ) -> None:
        super().__init__(
            model=model,
            missing=sorted(missing),
            unexpected=sorted(unexpected),
            shapes=list(shapes),
        )

    def describe(self) -> tuple[str, str | None]:
        parts = [
            f"{label} {_few(names)}"
            for label, names in (
                ("missing keys", self.missing),
                ("unexpected keys", self.unexpected),
                ("shape mismatches", self.shapes),
            )
            if names
        ]
        return (
            f"the weights do not fit model '{self.model}': " + "; ".join(parts),
            "the config.json and the weights disagree (was the model changed after training?)",
        )


class UnsafeRunFile(RunDirError):
    """Run ``directory``'s ``file`` may not be released: ``problem`` (a link, not regular)."""

    def __init__(self, directory: Any, *, file: str, problem: str) -> None:
        msg = f"{directory}/{file} {problem}: a release holds only regular files inside the run"
        hint = "replace the link with a copy of the file, or declare it as a release artifact"
        super().__init__(msg, hint=hint, directory=str(directory), file=file, problem=problem)


class UnsafeManifestPath(CheckFailed):
    """A ``path`` read from ``source`` (a manifest, an index, a ref) ``problem``. Exit 3."""

    def __init__(self, source: str, *, path: str, problem: str) -> None:
        msg, hint = f"{source}: the path {path} {problem}", "the release is damaged or tampered"
        super().__init__(msg, hint=hint, source=source, path=path, problem=problem)


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
