"""What ``release`` and ``verify`` return, typed: the verification report, the dry run's plan
and the release's result (the CLI renders them; ``to_dict()`` is their ``--format json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelkit.release.records import ReleaseRecord


@dataclass(frozen=True)
class EvalCheck:
    """The re-evaluation of a release: its primary ``metric``, the ``value`` measured here,
    the ``recorded`` one, the data ``spec`` and the evaluation ``file`` it reproduced."""

    metric: str
    value: float
    recorded: float
    spec: str
    file: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            self.metric: self.value,
            "value": self.value,
            "recorded": self.recorded,
            "spec": self.spec,
            "file": self.file,
        }


@dataclass(frozen=True)
class VerifyReport:
    """A verified release: where and what (``commit``), the release record, the signer, every
    file's size, the parameters that loaded, the optional re-evaluation, the checks made."""

    target: str
    repo_id: str
    version: str
    commit: str
    release_record: ReleaseRecord | None
    signer: str | None
    files: dict[str, int]
    num_parameters: int
    checks: list[str]
    eval: EvalCheck | None = None
    ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        record = self.release_record
        out: dict[str, Any] = {
            "target": self.target,
            "repo_id": self.repo_id,
            "version": self.version,
            "commit": self.commit,
            "release_record": record.document if record is not None else None,
            "signer": self.signer,
            "files": dict(self.files),
            "num_parameters": self.num_parameters,
            "checks": list(self.checks),
            "ok": self.ok,
        }
        if self.eval is not None:
            out["eval"] = self.eval.to_dict()
        return out


@dataclass(frozen=True)
class ReleasedFile:
    """One file of a release: its path, size and storage (``lfs`` or ``regular``)."""

    path: str
    size: int
    storage: str

    @classmethod
    def of(cls, f: Any) -> ReleasedFile:
        """The row of a package file."""
        return cls(f.path, f.size, "lfs" if f.lfs else "regular")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "storage": self.storage}


@dataclass(frozen=True)
class PlannedFile(ReleasedFile):
    """A file a dry run would publish, with its sha256."""

    sha256: str = ""

    @classmethod
    def of(cls, f: Any) -> PlannedFile:
        return cls(f.path, f.size, "lfs" if f.lfs else "regular", f.sha256)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"sha256": self.sha256}


@dataclass(frozen=True)
class ReleasePlan:
    """A dry run: the target, the repo's state, the files and their storage, the card's diff
    against the remote, the tag and the steps a release would take."""

    version: str
    target: str
    kind: str
    repo_id: str
    run_dir: str
    repo_exists: bool
    parent_commit: str | None
    released_versions: list[str]
    tag: str
    git_commit: str | None
    git_dirty: bool | None
    files: list[PlannedFile]
    total_size: int
    card_diff: list[str]
    signer: str | None
    steps: list[str]
    already_released: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "target": self.target,
            "kind": self.kind,
            "repo_id": self.repo_id,
            "run_dir": self.run_dir,
            "repo_exists": self.repo_exists,
            "parent_commit": self.parent_commit,
            "released_versions": list(self.released_versions),
            "tag": self.tag,
            "git": {"commit": self.git_commit, "dirty": self.git_dirty},
            "files": [f.to_dict() for f in self.files],
            "total_size": self.total_size,
            "card_diff": list(self.card_diff),
            "signer": self.signer,
            "steps": list(self.steps),
            "already_released": self.already_released,
        }


@dataclass(frozen=True)
class ReleaseResult:
    """A published (or re-verified) release: its verification report, the files it holds,
    whether the tag already held it, and what the target logged while publishing."""

    report: VerifyReport
    files: list[ReleasedFile]
    already_released: bool
    log: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.report.target

    @property
    def version(self) -> str:
        return self.report.version

    @property
    def commit(self) -> str:
        return self.report.commit

    @property
    def signer(self) -> str | None:
        return self.report.signer

    @property
    def checks(self) -> list[str]:
        return self.report.checks

    @property
    def ok(self) -> bool:
        return self.report.ok

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict() | {
            "already_released": self.already_released,
            "files": [f.to_dict() for f in self.files],
            "log": list(self.log),
        }
