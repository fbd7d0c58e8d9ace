"""What every release target speaks: its state, its files, and the :class:`Target` protocol.

A target (the Hub, a local registry) publishes one commit per release on top of the ``main``
head it was shown (``parent``). Who decides the order of concurrent releases:

* a local registry holds its lock (:meth:`Target.serialised`) while the release re-reads the
  refs, checks the version and writes the commit, the tag and ``main``;
* the Hub has no lock: its commit is a compare-and-swap on ``parent``; a head that moved
  meanwhile raises :class:`ParentMoved`, and the release re-reads, re-checks and tries again.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modelkit.errors import ModelkitError
from modelkit.release.records import MANIFEST, manifest_version


@dataclass
class RemoteState:
    """What a target holds for one repo: whether it exists, the main head, the tags."""

    exists: bool
    head: str | None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteFile:
    """One file at a remote revision, as the target reports it."""

    path: str
    size: int
    sha256: str | None  # known for LFS files (and every file of a local registry)
    git_oid: str | None


class ParentMoved(ModelkitError):
    """``main`` moved away from the parent a commit was built on (the compare-and-swap lost)."""

    def __init__(self, target: str, parent: str | None) -> None:
        super().__init__(
            f"{target}: main moved away from {str(parent)[:12]} while releasing",
            hint="another release landed first; re-run the release",
            target=target,
            parent=parent,
        )


class Target(Protocol):
    """A place releases go: the Hub or a local registry."""

    repo_id: str
    kind: str

    def describe(self) -> str: ...
    def state(self) -> RemoteState: ...
    def serialised(self) -> AbstractContextManager[None]: ...
    def files_at(self, revision: str) -> dict[str, RemoteFile]: ...
    def read_file(self, revision: str, path: str) -> bytes | None: ...
    def publish(self, package: Any, *, parent: str | None) -> str: ...
    def tag(self, version: str, commit: str) -> None: ...
    def download(self, version: str, cache_dir: Path) -> Path: ...


def main_version(target: Target, head: str | None) -> str | None:
    """The version of the release ``main`` holds at ``head`` (its manifest's), or None."""
    return manifest_version(target.read_file(head, MANIFEST) if head else None)
