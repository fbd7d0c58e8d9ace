"""Errors about code and calls: imports, recordability, the public API's arguments, user code, distributed layouts, interrupts."""

from __future__ import annotations

import signal as _signal
from typing import Any

from modelkit.errors.base import BadInputError, ModelkitError


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
    what: str

    def __init__(self, saved: int, now: int, *, what: str = "the run") -> None:
        super().__init__(saved=saved, now=now, what=what)

    def describe(self) -> tuple[str, str | None]:
        return (
            f"{self.what} was written by {self.saved} process(es); this one has {self.now}",
            f"resume with {self.saved} process(es), the same world size",
        )


class ShardingUnsupported(BadInputError):
    """Sharded (FSDP2) training cannot run as asked; ``reason``: processes | torch | option."""

    reason: str
    detail: str
    option: str | None

    def __init__(self, reason: str, detail: str, *, option: str | None = None) -> None:
        super().__init__(reason=reason, detail=detail, option=option)

    def describe(self) -> tuple[str, str | None]:
        hint = {
            "processes": "start it under torchrun with 2 or more processes (world size >= 2)",
            "torch": "install torch >= 2.8 (fully_shard, DCP's HuggingFaceStorageWriter)",
        }
        return f"sharded training: {self.detail}", hint.get(self.reason)


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
    value: str  # its repr, shortened

    def __init__(self, name: str, value: Any, expected: str, *, hint: str | None = None) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        super().__init__(hint=hint, name=name, value=shown, expected=expected)

    def describe(self) -> tuple[str, str | None]:
        return f"{self.name} must be {self.expected}, got {self.value}", None


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
