"""What run.json (and a release's manifest.json) record about the weights, read once, typed.

run.json holds the weights' identity and, since sharded weights, a ``weights`` object::

    "weights_sha256": "<identity: see modelkit.weights.hashing>",
    "weights": {
      "identity": "tensors-sha256-v1",            # the definition weights_sha256 follows
      "layout": "single" | "sharded",
      "files": {"model-00001-of-00003.safetensors": "<sha256>", ...,
                "model.safetensors.index.json": "<sha256>"},   # every file of the layout
      "index": "model.safetensors.index.json" | null,
      "total_size": 123456,                       # bytes of tensor data
      "shared_tensors": {"lm_head.weight": "transformer.wte.weight"}   # dropped -> stored
    }

A record without the ``weights`` object (written before it existed) is a single
``model.safetensors`` whose ``weights_sha256`` is that file's sha256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from typing_extensions import TypedDict

from modelkit.errors import RunDirError
from modelkit.runs import read_run_record
from modelkit.runs.parts import WeightsInfo
from modelkit.runs.typed import read_typed
from modelkit.validation import read_json_file, validate_document
from modelkit.weights.hashing import IDENTITY
from modelkit.weights.layout import SINGLE


class WeightsObject(TypedDict, total=False):
    """The shape of run.json's ``weights`` object (checked when read)."""

    identity: str
    layout: Literal["single", "sharded"]
    files: dict[str, str]
    index: str | None
    total_size: int
    shared_tensors: dict[str, str]


@dataclass(frozen=True)
class WeightsRecord:
    """run.json's facts about the weights; ``files`` maps each file to its sha256."""

    weights_sha256: str | None
    files: dict[str, str] = field(default_factory=dict)
    layout: str | None = None
    index: str | None = None
    total_size: int | None = None
    shared_tensors: dict[str, str] = field(default_factory=dict)
    identity: str | None = None  # None: a record from before the ``weights`` object

    @classmethod
    def from_saved(cls, saved: Any) -> WeightsRecord:
        """The record of what :func:`~modelkit.weights.save.save_model_weights` wrote."""
        return cls(
            weights_sha256=saved.weights_sha256,
            files=dict(saved.files),
            layout=saved.layout,
            index=saved.index,
            total_size=saved.total_size,
            shared_tensors=dict(saved.shared_tensors),
            identity=IDENTITY,
        )

    @classmethod
    def from_fields(cls, sha: str | None, weights: Any, *, source: str) -> WeightsRecord:
        """Type-check ``weights_sha256`` + the ``weights`` object of a run record at ``source``."""
        if weights is None:
            legacy = {SINGLE: sha} if sha else {}
            return cls(weights_sha256=sha, files=legacy, layout="single" if sha else None)
        if not isinstance(weights, dict):
            raise RunDirError(
                f"{source}: key 'weights' must be an object", hint="the file is corrupt"
            )
        validate_document(WeightsObject, weights, source=f"{source} weights", error=RunDirError)
        info = read_typed(WeightsInfo, weights, source=source, where="weights")
        return cls(
            weights_sha256=sha,
            files=dict(info.files),
            layout=info.layout,
            index=info.index,
            total_size=info.total_size,
            shared_tensors=dict(info.shared_tensors),
            identity=info.identity,
        )

    def to_fields(self) -> dict[str, Any]:
        """The run.json fields (``weights_sha256`` and ``weights``)."""
        return {
            "weights_sha256": self.weights_sha256,
            "weights": {
                "identity": self.identity,
                "layout": self.layout,
                "files": dict(sorted(self.files.items())),
                "index": self.index,
                "total_size": self.total_size,
                "shared_tensors": dict(sorted(self.shared_tensors.items())),
            },
        }


def read_weights_record(directory: Path | str) -> WeightsRecord | None:
    """The weights facts of the run.json in ``directory``; None when there is no run.json."""
    d = Path(directory)
    if not (d / "run.json").is_file():
        return None
    rec = read_run_record(d)
    return WeightsRecord.from_fields(
        rec.weights_sha256,
        rec.weights.as_dict() if rec.weights else None,
        source=str(d / "run.json"),
    )


@dataclass(frozen=True)
class ManifestFile:
    """One file of a release's ``manifest.json``: its sha256 and size, whether it went through
    LFS, and its git blob id (small files). Written by a release, read back by ``verify``."""

    sha256: str
    size: int
    lfs: bool | None = None
    git_oid: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry as written (``git_oid`` only when known)."""
        out: dict[str, Any] = {"sha256": self.sha256, "size": self.size, "lfs": self.lfs}
        return out | ({"git_oid": self.git_oid} if self.git_oid else {})


@dataclass(frozen=True)
class _ManifestFiles:
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def manifest_files(
    doc: Any, *, source: str, error: type[Exception] = RunDirError
) -> dict[str, ManifestFile]:
    """The ``files`` object of a parsed ``manifest.json``, typed (``error`` naming the field
    when an entry lacks its sha256 or size, or holds a value of the wrong type)."""
    listed = read_typed(_ManifestFiles, doc, source=source, error=error).files
    out = {}
    for name, entry in listed.items():
        if "sha256" not in entry or "size" not in entry:  # a check of the entry's keys
            raise error(
                f"{source}: field 'files.{name}' must hold sha256 and size",
                hint="the file is corrupt or was edited by hand",
            )
        where = f"files.{name}"
        out[name] = read_typed(ManifestFile, entry, source=source, error=error, where=where)
    return out


def read_manifest_hashes(path: Path) -> dict[str, str]:
    """``{file: sha256}`` from a release's ``manifest.json`` (typed; exit 2 when malformed)."""
    doc = read_json_file(path, what="release manifest", error=RunDirError)
    files = manifest_files(doc, source=str(path))
    return {name: entry.sha256 for name, entry in files.items()}
