"""run.json and metrics.jsonl as typed values: read once, then fields, never string keys.

:class:`RunRecord` types every field a verb reads (``record.metrics``, ``record.data_fingerprint``,
``record.world_size``, ``record.artifacts`` ...); :class:`MetricRow` types one metrics.jsonl
row. ``raw`` keeps the whole parsed document for writers that lay new fields over it.

NaN and infinities are never written as the non-standard JSON ``NaN``: a non-finite metric
value is stored as ``null`` and its name listed under the row's (or the record's)
``"nonfinite"`` key as ``{"name": "nan" | "inf" | "-inf"}`` (see :func:`encode_metrics`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.errors import RunDirError
from modelkit.runs.parts import (
    Accel,
    Best,
    CommandInfo,
    DataInfo,
    Determinism,
    Distributed,
    EnvInfo,
    GitInfo,
    Reference,
    Timings,
    WeightsInfo,
)
from modelkit.runs.typed import read_typed, to_plain

RUN_RECORD_VERSION = 1


@dataclass(frozen=True)
class Artifact:
    """A file the run declared: ``run.add_artifact`` copies it to ``artifacts/<name>`` and
    records ``{"name", "path", "sha256", "size"}``; a plain path string (a file already in the
    run) is read as an artifact without a recorded hash. ``path`` is relative to the run."""

    name: str
    path: str
    sha256: str | None = None
    size: int | None = None

    @property
    def relpath(self) -> str:
        """Its path inside the run directory."""
        return self.path

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class ResumeNote:
    """One entry of ``resumes``: where the run continued from, and the checkpoints it skipped
    (``(file, reason)``) because they failed their checksums."""

    from_step: int
    checkpoint: str | None
    rejected: list[tuple[str, str]]


@dataclass(frozen=True)
class RunRecord:
    """``run.json`` as typed fields; ``raw`` keeps the whole record.

    :meth:`from_dict` names a field of the wrong type, or null where a value is required,
    with the file (exit 2) instead of failing later on a string key.
    """

    status: str
    version: int = RUN_RECORD_VERSION
    started: str | None = None
    finished: str | None = None
    trainer: str = "modelkit"
    command: CommandInfo | None = None
    model: str | None = None
    seed: int | None = None
    config_sha256: str | None = None
    git: GitInfo = field(default_factory=GitInfo)
    env: EnvInfo = field(default_factory=EnvInfo)
    determinism: Determinism = field(default_factory=Determinism)
    data: DataInfo = field(default_factory=DataInfo)
    timings: Timings = field(default_factory=Timings)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None
    weights: WeightsInfo | None = None
    fingerprint_every: int | None = None
    num_parameters: int | None = None
    reference: Reference | None = None
    steps: int | None = None
    samples_seen: int | None = None
    samples_per_second: float | None = None
    tokens_seen: int | None = None  # a task counting tokens (language modelling)
    tokens_per_second: float | None = None
    error: str | None = None
    last_good_checkpoint: str | None = None
    perturbed: str | None = None
    resumes: list[dict[str, Any]] = field(default_factory=list)
    distributed: Distributed | None = None
    accel: Accel | None = None
    best: Best | None = None
    config: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    task: str | None = None
    eval_transform: str | None = None
    artifacts: tuple[Artifact, ...] = field(default=(), metadata={"derived": True})
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def complete(self) -> bool:
        """True for a finished run (status ``complete``)."""
        return self.status == "complete"

    @property
    def data_fingerprint(self) -> str | None:
        """The training data's fingerprint, when recorded."""
        return self.data.fingerprint

    @property
    def data_spec(self) -> str | None:
        """The modelkit data spec the run trained on (``digits``), when it names one."""
        return self.data.spec or None

    @property
    def data_name(self) -> str | None:
        """The training data's name (an own loop's dataset class, say)."""
        return self.data.name

    @property
    def data_classes(self) -> list[str] | None:
        """The training data's class names, when recorded (classification)."""
        value = self.data.classes
        return [str(c) for c in value] if value is not None else None

    @property
    def input_shape(self) -> list[int] | None:
        """One training sample's shape, when recorded."""
        return self.data.input_shape

    @property
    def context_length(self) -> int:
        """The text context length the run trained with (0: not a text run)."""
        return self.data.context_length or 0

    @property
    def own_loop(self) -> bool:
        """Written by a user's own loop (``start_run``), not by ``modelkit train``."""
        return self.trainer == "user"

    @property
    def last_resume(self) -> ResumeNote | None:
        """The newest resume of the run (None when it never resumed)."""
        if not self.resumes or not isinstance(self.resumes[-1], dict):
            return None
        entry = self.resumes[-1]
        rejected = entry.get("rejected_checkpoints") or []
        return ResumeNote(
            from_step=int(entry.get("from_step") or 0),
            checkpoint=entry.get("checkpoint"),
            rejected=[(str(r.get("checkpoint")), str(r.get("reason"))) for r in rejected],
        )

    @property
    def world_size(self) -> int:
        """How many processes trained the run (1 unless distributed)."""
        return self.distributed.world_size if self.distributed else 1

    @property
    def threads(self) -> int | None:
        """The torch thread count the run fixed (its determinism block), when recorded."""
        return self.determinism.threads

    @property
    def data_placement(self) -> str | None:
        """Where the built-in trainer kept the batches ("device" | "host")."""
        return self.accel.data_placement if self.accel else None

    @property
    def train_s(self) -> float:
        """Training seconds recorded so far (0.0 when none)."""
        return float(self.timings.train_s or 0.0)

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> RunRecord:
        """Check the types of the known fields of ``data`` (a parsed run.json at ``source``)."""
        if not isinstance(data, dict):
            raise RunDirError(
                f"{source} must hold a JSON object, got {type(data).__name__}",
                hint="the file is corrupt or was edited by hand",
            )
        if "status" not in data:
            raise RunDirError(
                f"{source} has no 'status' field", hint="the file is corrupt or incomplete"
            )
        record = read_typed(cls, data, source=source)
        artifacts = tuple(_artifact(a, source) for a in _checked_list(data, "artifacts", source))
        return dataclasses.replace(record, artifacts=artifacts)

    def script_roots(self) -> list[Path]:
        """The folders the run records, existing ones only: the training script's folder, the
        directory it ran in and the git root (where the model's module may be found)."""
        cwd = self.command.cwd if self.command else None
        argv = self.command.argv if self.command else []
        out: list[Path] = []
        if argv and isinstance(argv[0], str) and argv[0].endswith(".py"):
            script = Path(argv[0])
            out.append((Path(cwd) / script if cwd and not script.is_absolute() else script).parent)
        if cwd:
            out.append(Path(cwd))
        if self.git.root:
            out.append(Path(self.git.root))
        return [p for p in dict.fromkeys(out) if p.is_dir()]

    def metric(self, name: str) -> Any:
        """A final metric by name (``float("nan")``/``inf`` for an encoded non-finite one)."""
        nonfinite = self.metrics.get("nonfinite")
        if isinstance(nonfinite, dict) and name in nonfinite:
            return float(nonfinite[name])
        return self.metrics.get(name)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (``raw`` with the typed fields laid over it)."""
        out = to_plain(self)
        if self.artifacts or "artifacts" in self.raw:
            out["artifacts"] = [a.to_dict() for a in self.artifacts]
        return out


def _checked_list(data: dict[str, Any], key: str, source: str) -> list[Any]:
    value = data.get(key)
    if value is None or isinstance(value, list):
        return value or []
    raise RunDirError(
        f"{source}: field '{key}' must be a list, got {type(value).__name__}",
        hint="the file is corrupt or was edited by hand",
    )


def _artifact(entry: Any, source: str) -> Artifact:
    if isinstance(entry, str) and entry:
        return Artifact(name=entry.rsplit("/", 1)[-1], path=entry)
    ok = (
        isinstance(entry, dict)
        and isinstance(entry.get("path"), str)
        and isinstance(entry.get("sha256"), (str, type(None)))
        and isinstance(entry.get("size"), (int, type(None)))
    )
    if not ok:
        raise RunDirError(
            f"{source}: field 'artifacts' holds an entry that is neither a path nor "
            f"{{name, path, sha256, size}}: {json.dumps(entry)[:60]}",
            hint="the file is corrupt or was edited by hand",
        )
    path = entry["path"]
    name = entry.get("name") if isinstance(entry.get("name"), str) else path.rsplit("/", 1)[-1]
    return Artifact(name=name, path=path, sha256=entry.get("sha256"), size=entry.get("size"))


# ---- metrics.jsonl rows ---------------------------------------------------------------------
_ROW_KEYS = ("kind", "step", "epoch", "sha256", "nonfinite")


@dataclass(frozen=True)
class MetricRow:
    """One metrics.jsonl row: ``kind`` ("step" | "epoch" | "fingerprint"), its step (and
    epoch), the logged ``values`` (name -> number, string or None for a non-finite value),
    a fingerprint's ``sha256``; ``raw`` is the row as written."""

    kind: str
    step: int
    epoch: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    nonfinite: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def loss(self) -> float | None:
        """The row's loss, when it logged a finite one."""
        value = self.values.get("loss")
        return float(value) if isinstance(value, (int, float)) else None

    def value(self, name: str) -> Any:
        """A logged value by name (``float("nan")``/``inf`` for an encoded non-finite one)."""
        if name in self.nonfinite:
            return float(self.nonfinite[name])
        return self.values.get(name)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> MetricRow:
        """A parsed row (a row without a usable step counts as step 0)."""
        step, epoch = row.get("step"), row.get("epoch")
        nonfinite = row.get("nonfinite")
        return cls(
            kind=str(row.get("kind", "step")),
            step=step if isinstance(step, int) and not isinstance(step, bool) else 0,
            epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
            values={k: v for k, v in row.items() if k not in _ROW_KEYS},
            sha256=row.get("sha256") if isinstance(row.get("sha256"), str) else None,
            nonfinite=dict(nonfinite) if isinstance(nonfinite, dict) else {},
            raw=row,
        )


def encode_metrics(values: dict[str, Any]) -> dict[str, Any]:
    """Metrics as standard JSON: each NaN/inf becomes ``null`` and is named under
    ``"nonfinite"`` (``{"loss": "nan"}``); finite values are kept as they are."""
    out: dict[str, Any] = {}
    nonfinite: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            nonfinite[key] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            value = None
        out[key] = value
    if nonfinite:
        out["nonfinite"] = nonfinite
    return out
