"""The records a release writes and ``verify`` reads back, typed: the manifest
(``manifest.json``: every file's size and hashes, the run it came from, the weights) and the
release record (``releases/<version>.json`` beside the refs, or ``.modelkit/releases/`` on the
Hub's ``main``: the commit the tag was created on, the manifest's sha256, the signer).

Each is one frozen dataclass, built by the release (``to_dict()`` gives the JSON it writes) and
read back by :func:`modelkit.runs.typed.read_typed` (unknown keys are kept in ``raw``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from modelkit.errors import CheckFailed, ModelkitError
from modelkit.runs.typed import read_typed, to_plain
from modelkit.weights.record import ManifestFile, manifest_files

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

__all__ = [
    "MANIFEST", "MANIFEST_VERSION", "Manifest", "ManifestFile", "ManifestRun", "ManifestWeights",
    "ReleaseRecord", "manifest_version",
]  # fmt: skip


@dataclass(frozen=True)
class ManifestRun:
    """The run a release came from: its model, config and data, the code's commit, the
    weights' identity and how to rebuild the model (config.json's ``modelkit.reference``)."""

    model: str | None = None
    config_sha256: str | None = None
    git_commit: str | None = None
    data_fingerprint: str | None = None
    weights_sha256: str | None = None
    reference: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config_sha256": self.config_sha256,
            "git_commit": self.git_commit,
            "data_fingerprint": self.data_fingerprint,
            "weights_sha256": self.weights_sha256,
            "reference": self.reference,
        }


@dataclass(frozen=True)
class ManifestWeights:
    """The released weights: safetensors metadata, parameter count, dtypes, the layout and its
    files, the tensors' total size and the shared tensors (stored under one name)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    num_parameters: int | None = None
    dtypes: dict[str, int] = field(default_factory=dict)
    layout: str | None = None
    files: list[str] = field(default_factory=list)
    total_size: int | None = None
    shared_tensors: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metadata": self.metadata,
            "num_parameters": self.num_parameters,
            "dtypes": self.dtypes,
            "layout": self.layout,
            "files": self.files,
            "total_size": self.total_size,
            "shared_tensors": self.shared_tensors,
        }


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: what was released (every file's size and hashes), from which run."""

    repo_id: str | None = None
    version: str | None = None
    manifest_version: int | None = None
    created_by: str | None = None
    run: ManifestRun = field(default_factory=ManifestRun)
    weights: ManifestWeights | None = None
    artifacts: list[str] = field(default_factory=list)
    files: dict[str, ManifestFile] = field(default_factory=dict, metadata={"derived": True})
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as written (``json.dumps(..., sort_keys=True, indent=2)``)."""
        return {
            "manifest_version": self.manifest_version,
            "repo_id": self.repo_id,
            "version": self.version,
            "created_by": self.created_by,
            "run": self.run.to_dict(),
            "weights": self.weights.to_dict() if self.weights is not None else None,
            "files": {name: f.to_dict() for name, f in self.files.items()},
            "artifacts": list(self.artifacts),
        }

    def to_json(self) -> bytes:
        """The bytes of ``manifest.json``."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n").encode()

    @property
    def document(self) -> dict[str, Any]:
        """The manifest as it was read (every key, typed or not), else as it is written."""
        return dict(self.raw) if self.raw else self.to_dict()

    @classmethod
    def from_dict(cls, data: Any, *, source: str, error: type[Exception] = CheckFailed) -> Manifest:
        """A parsed manifest (a field of the wrong type, or a file entry without its sha256
        and size, raises ``error`` naming it)."""
        manifest = read_typed(cls, data, source=source, error=error)
        return replace(manifest, files=manifest_files(data, source=source, error=error))


def manifest_version(data: bytes | None) -> str | None:
    """The version a ``manifest.json`` names (None when it names none or is not a manifest)."""
    if not data:
        return None
    try:
        return read_typed(Manifest, json.loads(data), source=MANIFEST, error=CheckFailed).version
    except (ValueError, ModelkitError):
        return None


@dataclass(frozen=True)
class ReleaseRecord:
    """What a release recorded about its tag, written once beside the refs: the commit the
    tag was created on, the manifest's sha256, the signer's key fingerprint (None: unsigned).
    ``error`` says why a record that exists could not be read (verify reports it)."""

    version: str | None = None
    repo_id: str | None = None
    commit: str | None = None
    manifest_sha256: str | None = None
    signer: str | None = None
    released: str | None = None
    created_by: str | None = None
    error: str | None = field(default=None, metadata={"derived": True})
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The record as written."""
        return {
            "version": self.version,
            "repo_id": self.repo_id,
            "commit": self.commit,
            "manifest_sha256": self.manifest_sha256,
            "signer": self.signer,
            "released": self.released,
            "created_by": self.created_by,
        }

    def to_json(self) -> bytes:
        """The bytes of the record's file."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n").encode()

    @property
    def document(self) -> dict[str, Any]:
        """The record as it was read (``{"error": ...}`` when it could not be)."""
        return {"error": self.error} if self.error is not None else to_plain(self)

    @classmethod
    def parse(cls, data: bytes, *, source: str) -> ReleaseRecord:
        """The record in ``data``; one that is not JSON, or holds a field of the wrong type,
        is a record whose ``error`` says so (a failed check, not a crash)."""
        try:
            doc = json.loads(data)
        except ValueError:
            return cls(error=f"{source} is not JSON")
        try:
            return read_typed(cls, doc, source=source, error=CheckFailed)
        except CheckFailed as exc:
            return cls(error=exc.message)
