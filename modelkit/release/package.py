"""The release package: the files a release publishes, hashed in one streaming pass, + a manifest.

A package is a plan, not a copy: files stay where they are (in the run directory) and are read
in fixed-size chunks, so packaging 1 GiB of weights needs no more than a few MiB of memory.
The weights go whole, in either layout: ``model.safetensors``, or every shard + the index.
Only the card (its loading snippet pinned to the release tag) and the manifest live in memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit import __version__
from modelkit.errors import CheckFailed, IntegrityError, RunDirError, WeightsLayoutError
from modelkit.release.artifacts import declared_artifacts
from modelkit.release.files import (
    Hashing,
    PackageFile,
    disk_file,
    git_blob_oid,
    is_lfs,
    memory_file,
)
from modelkit.release.paths import check_relpath
from modelkit.release.records import (
    MANIFEST,
    MANIFEST_VERSION,
    Manifest,
    ManifestFile,
    ManifestRun,
    ManifestWeights,
)
from modelkit.release.signing import PUBLIC_KEY, SIGNATURE, sign_manifest
from modelkit.runs import EVALS_DIR, RunRecord, open_run, read_eval_record, read_run_record
from modelkit.weights import WeightsLayout, read_layout, summarize
from modelkit.weights.hashing import hash_file
from modelkit.weights.layout import read_header
from modelkit.weights.verify import compare_hashes, recorded_hashes

__all__ = [
    "Package", "PackageFile", "build_package", "git_blob_oid", "hash_file", "is_lfs", "memory_file",
]  # fmt: skip
REQUIRED_RUN_FILES = ("config.json", "run.json")  # + the weights (either layout) + the card
OPTIONAL = ("eval.json", "training_curves.png")


def evaluation_files(run_dir: Path) -> list[Path]:
    """A run's evaluations: ``eval.json`` (the training data's held-out split) then ``evals/*``."""
    own = [run_dir / "eval.json"] if (run_dir / "eval.json").is_file() else []
    return own + sorted((run_dir / EVALS_DIR).glob("*.json"))


def require_evaluation(run_dir: Path, *, task: Any = None) -> list[Path]:
    """At least one evaluation (in ``task``'s format, docs/tasks.md), or a RunDirError saying
    how to make one."""
    found = evaluation_files(run_dir)
    if not found:
        what = f"a {task.name} evaluation" if task is not None else "an evaluation"
        metrics = ", ".join(m.key for m in task.metrics[:2]) if task is not None else ""
        raise RunDirError(
            f"no evaluation in {run_dir} (eval.json or evals/*.json)",
            hint=f"evaluate first: modelkit eval {run_dir} (a run from your own loop: add "
            f"--data SPEC); it writes {what}" + (f" ({metrics})" if metrics else ""),
        )
    return found


@dataclass(frozen=True)
class Package:
    """Everything a target needs to publish one version."""

    version: str
    repo_id: str
    run_dir: Path
    files: list[PackageFile]
    manifest: Manifest
    weights: dict[str, Any] = field(default_factory=dict)
    signer: str | None = None  # the signing key's fingerprint, when signed

    def file(self, path: str) -> PackageFile:
        """The package file named ``path``."""
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and check one safetensors header; returns metadata, tensors, dtypes, parameter
    count (a damaged file is a :class:`~modelkit.errors.WeightsLayoutError` naming it)."""
    header = read_header(Path(path))
    dtypes: dict[str, int] = {}
    for t in header.tensors.values():
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + t.numel
    return {
        "metadata": dict(header.metadata),
        "tensors": {
            k: {"dtype": t.dtype, "shape": list(t.shape)} for k, t in header.tensors.items()
        },
        "num_tensors": len(header.tensors),
        "num_parameters": sum(t.numel for t in header.tensors.values()),
        "dtypes": dtypes,
    }


def build_package(
    run_dir: Path | str,
    *,
    version: str,
    repo_id: str,
    card: bytes,
    sign_key: Path | str | None = None,
    project: Any = None,
    hashing: Hashing | None = None,
) -> Package:
    """Check a run directory and hash its release files (streaming) into a :class:`Package`.

    Either weights layout is released whole (``model.safetensors``, or every shard + the
    index), each file checked against run.json's record. ``card`` is the final README.md
    (its loading snippet pinned to ``version``); with ``sign_key`` (an EC private key PEM)
    the manifest is signed (``manifest.sig`` + ``signer.pub``). The run's declared artifacts
    (:mod:`modelkit.release.artifacts`; ``project`` holds the ``include`` globs) go along.
    ``hashing``: the weights files of this run, being hashed in the background already.
    """
    run, record = _complete_run(run_dir)
    layout, weights = _weights_files(run.path, hashing)
    files = [*weights, *_run_files(run.path, card)]
    artifacts = declared_artifacts(
        run.path, record=record, project=project, released={f.path for f in files}
    )
    root = Path(run.path).resolve()
    for name, (path, recorded) in artifacts.items():
        f = disk_file(run.path, path.relative_to(root).as_posix(), name)
        if recorded is not None and recorded != f.sha256:
            raise IntegrityError(
                path, expected=recorded, actual=f.sha256, record="run.json's artifacts"
            )
        files.append(f)
    _check_evaluations(run.path, identity=record.weights_sha256)
    manifest = _manifest(
        run, record, layout, files, repo_id=repo_id, version=version, artifacts=sorted(artifacts)
    )
    blob = manifest.to_json()
    files.append(memory_file(MANIFEST, blob))
    signer = None
    if sign_key is not None:
        signature = sign_manifest(blob, key=sign_key)
        files.append(memory_file(SIGNATURE, signature.bundle))
        files.append(memory_file(PUBLIC_KEY, signature.public_key))
        signer = signature.fingerprint
    header = summarize(layout).to_dict()
    return Package(version, repo_id, run.path, files, manifest, weights=header, signer=signer)


def _complete_run(run_dir: Path | str) -> tuple[Any, RunRecord]:
    """The run (its files present) and its typed record, which must say ``complete``."""
    run = open_run(run_dir, require=REQUIRED_RUN_FILES)
    record = read_run_record(run)
    if not record.complete:
        raise RunDirError(
            f"run {run.path} is not complete (status: {record.status})",
            hint="release a finished run",
        )
    return run, record


def _weights_files(
    run_dir: Path, hashing: Hashing | None = None
) -> tuple[WeightsLayout, list[PackageFile]]:
    """Every file of the weights' layout, hashed once (on every core; ``hashing``: already
    started in the background) and checked against run.json's record (a file that differs is
    named: exit 3)."""
    layout = read_layout(run_dir)
    for header in layout.headers:
        if not header.format:
            raise WeightsLayoutError(
                run_dir,
                file=header.name,
                problem="has no 'format' in its safetensors metadata",
                hint="save weights with metadata={'format': 'pt'} (modelkit does)",
            )
    if hashing is not None and hashing.run_dir.resolve() == Path(run_dir).resolve():
        files = hashing.files(layout.files)  # started in the background by the caller
    else:
        with Hashing(run_dir) as here:
            files = here.files(layout.files)
    expected = recorded_hashes(run_dir, trust_unrecorded=False)
    compare_hashes(layout, {f.path: f.sha256 for f in files}, expected or {}, against="run.json")
    return layout, files


def _run_files(run_dir: Path, card: bytes) -> list[PackageFile]:
    """config.json, run.json, the card, and the optional files and evaluations that exist."""
    names = [*REQUIRED_RUN_FILES, *(n for n in OPTIONAL if os.path.lexists(run_dir / n))]
    evals = run_dir / EVALS_DIR
    if evals.is_dir():  # results on other data, each under its own dataset name
        names += [f"{EVALS_DIR}/{p.name}" for p in sorted(evals.glob("*.json"))]
    files = [disk_file(run_dir, name) for name in names]
    files.append(memory_file("README.md", card))
    return files


def _check_evaluations(run_dir: Path, *, identity: str | None) -> None:
    """At least one evaluation, each computed for these weights (by their identity)."""
    for path in require_evaluation(run_dir):
        try:
            evaluated = read_eval_record(path).weights_sha256
        except RunDirError:
            raise RunDirError(
                f"{path} is not an evaluation result", hint=f"re-run: modelkit eval {run_dir}"
            ) from None
        if evaluated not in (None, identity):
            raise RunDirError(
                f"{path} was computed for other weights",
                hint=f"re-run: modelkit eval {run_dir}"
                + ("" if path.name == "eval.json" else " --data SPEC"),
            )


def _manifest(
    run: Any,
    record: RunRecord,
    layout: WeightsLayout,
    files: list[PackageFile],
    *,
    repo_id: str,
    version: str,
    artifacts: list[str],
) -> Manifest:
    """The manifest: what was released (every file's size and hashes), from which run."""
    summary = summarize(layout)
    reference = run.run_config().modelkit.reference
    return Manifest(
        manifest_version=MANIFEST_VERSION,
        repo_id=repo_id,
        version=version,
        created_by=f"modelkit {__version__}",
        run=ManifestRun(
            model=record.model,
            config_sha256=record.config_sha256,
            git_commit=record.git.commit,
            data_fingerprint=record.data_fingerprint,
            weights_sha256=record.weights_sha256,
            reference=reference.as_dict() if reference is not None else None,
        ),
        weights=ManifestWeights(
            metadata=summary.metadata,
            num_parameters=summary.num_parameters,
            dtypes=summary.dtypes,
            layout=layout.kind,
            files=layout.files,
            total_size=layout.total_size,
            shared_tensors=dict(layout.shared),
        ),
        files={
            f.path: ManifestFile(sha256=f.sha256, size=f.size, lfs=f.lfs, git_oid=f.git_oid)
            for f in files
        },
        artifacts=artifacts,
    )


def read_manifest(data: bytes, *, source: str) -> Manifest:
    """Parse a manifest, with a clear error when it is not one; every file name in it is a
    plain relative path (:func:`check_relpath`) before any caller writes under it."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or "files" not in doc:
            raise ValueError(MANIFEST)
        m = Manifest.from_dict(doc, source=source)
    except Exception:
        raise CheckFailed(
            f"{source}: {MANIFEST} is missing or malformed", hint="the release is incomplete"
        ) from None
    for name in m.files:
        check_relpath(name, source=f"{source}: {MANIFEST}")
    return m
