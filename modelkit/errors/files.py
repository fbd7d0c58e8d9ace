"""Errors about files: run files, weights layouts and shards, hashes, release manifests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelkit.errors.base import BadInputError, CheckFailed, ModelkitError, RunDirError, _few


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
