"""The run directory's files, and the typed reads every verb makes of them.

::

    RUN_DIR/
      config.json        model init kwargs (HF from_pretrained reads them) + "modelkit": {model, train}
      run.json           the run record: status, git, env, seed, data, timings, metrics, weights sha256
      metrics.jsonl      one JSON object per line: {"kind": "step"|"epoch"|"fingerprint", ...}
      model.safetensors  final weights (or shards + model.safetensors.index.json)
      checkpoints/       atomic, resumable checkpoints (latest N kept)
      artifacts/         files the run declared with ``run.add_artifact`` (tokenizer, vocab, ...)
      eval.json          written by `modelkit eval`
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit import validation
from modelkit.errors import RunDirError
from modelkit.io import write_bytes_atomic, write_json_atomic
from modelkit.redact import redact
from modelkit.runs.documents import EvalRecord, RunConfig, read_eval_record
from modelkit.runs.record import RUN_RECORD_VERSION, MetricRow, RunRecord

__all__ = ["RUN_FILES", "RUN_RECORD_VERSION", "RunDir", "open_run", "read_run_record"]

RUN_FILES = ("config.json", "run.json", "metrics.jsonl", "model.safetensors")
ARTIFACTS_DIR = "artifacts"
EVALS_DIR = "evals"  # evals/<dataset>.json: evaluations on data other than the training data's


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory, and its typed reads."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def record(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def artifacts(self) -> Path:
        return self.path / ARTIFACTS_DIR

    @property
    def eval(self) -> Path:
        return self.path / "eval.json"

    def read_record(self) -> dict[str, Any]:
        """The run record (``run.json``) as checked JSON; prefer :meth:`run_record`."""
        return _read_json(self.record, what="run record")

    def run_record(self) -> RunRecord:
        """The typed run record (a field of the wrong type is exit 2, naming the file)."""
        return RunRecord.from_dict(self.read_record(), source=str(self.record))

    def read_config(self) -> dict[str, Any]:
        """The saved ``config.json``."""
        return _read_json(self.config, what="run config")

    def run_config(self) -> RunConfig:
        """The typed ``config.json`` (model kwargs + the ``modelkit`` section)."""
        return RunConfig.from_dict(self.read_config(), source=str(self.config))

    def eval_record(self) -> EvalRecord | None:
        """The typed ``eval.json`` (None when the run was not evaluated)."""
        return read_eval_record(self.eval) if self.eval.is_file() else None

    def other_evals(self) -> list[EvalRecord]:
        """The typed ``evals/*.json`` (evaluations on other data), by file name."""
        return [read_eval_record(p) for p in sorted((self.path / EVALS_DIR).glob("*.json"))]

    def train_config(self) -> Any:
        """The resolved :class:`TrainConfig` the run used."""
        from modelkit.config import TrainConfig

        cfg = self.read_config().get("modelkit", {}).get("train")
        if not isinstance(cfg, dict):
            raise RunDirError(
                f"{self.config} has no modelkit.train section",
                hint="was this run made by modelkit train?",
            )
        return TrainConfig.from_dict(cfg, source=str(self.config))

    def write_record(self, record: dict[str, Any]) -> None:
        """Atomically (re)write ``run.json`` (secrets redacted: they never enter a record)."""
        write_json_atomic(self.record, redact(record))

    def append_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Append rows to ``metrics.jsonl`` (flushed and fsynced)."""
        if not rows:
            return
        with open(self.metrics, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """All rows of ``metrics.jsonl`` (a torn last line from a crash is skipped; a line that
        is JSON but not an object is a RunDirError naming it); prefer :meth:`metric_rows`."""
        if not self.metrics.is_file():
            return []
        rows = []
        lines = self.metrics.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if not isinstance(row, dict):
                raise RunDirError(
                    f"{self.metrics} line {number} is not a JSON object: {line[:40]!r}",
                    hint='each line of metrics.jsonl is one object ({"step": ..., ...}); '
                    "remove or fix that line",
                )
            rows.append(row)
        return rows

    def metric_rows(self) -> list[MetricRow]:
        """Every row of ``metrics.jsonl`` typed (see :class:`~modelkit.runs.record.MetricRow`)."""
        return [MetricRow.from_dict(row) for row in self.read_metrics()]

    def keep_metrics_until(self, step: int) -> None:
        """Keep only the metrics rows up to ``step`` (-1: none), atomically."""
        if not self.metrics.is_file():
            return
        rows = [r for r in self.metric_rows() if r.step <= step]
        body = "".join(json.dumps(r.raw, sort_keys=True) + "\n" for r in rows)
        write_bytes_atomic(self.metrics, body.encode())


def _read_json(path: Path, *, what: str) -> dict[str, Any]:
    """Typed read of a run file: missing, unreadable, not JSON or a field of the wrong type
    each give one RunDirError naming the file and key (schemas in modelkit.validation)."""
    schema = {"run.json": validation.RunRecordFile, "config.json": validation.RunConfigFile}
    return validation.read_json_file(
        path, what=what, error=RunDirError, schema=schema.get(path.name)
    )


def read_run_record(run: RunDir | Path | str) -> RunRecord:
    """The typed :class:`RunRecord` of a run directory (exit 2 naming a bad field)."""
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    return run.run_record()


def recorded_roots(directory: Path | str) -> list[Path]:
    """The folders run.json in ``directory`` records (:meth:`RunRecord.script_roots`); none
    when it has no readable run.json."""
    try:
        return read_run_record(directory).script_roots()
    except RunDirError:
        return []


def open_run(path: Path | str, *, require: tuple[str, ...] = ("run.json", "config.json")) -> RunDir:
    """Open an existing run directory, checking the files a verb needs."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise RunDirError(
            f"run directory not found: {run.path}",
            hint="train one first: modelkit train --out runs/my-run",
        )
    missing = [name for name in require if not (run.path / name).is_file()]
    if missing:
        raise RunDirError(
            f"run directory {run.path} is missing {', '.join(missing)}",
            hint="was training interrupted? re-run `modelkit train`",
        )
    return run


def latest_run(root: Path | str = "runs") -> Path | None:
    """The most recently modified complete run under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return None
    runs = [
        p
        for p in root.iterdir()
        if (p / "run.json").is_file() and (p / "model.safetensors").is_file()
    ]
    return max(runs, key=lambda p: (p / "run.json").stat().st_mtime) if runs else None


def now_iso() -> str:
    """UTC timestamp, ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
