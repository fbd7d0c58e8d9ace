"""The run directory: the spine every verb reads.

::

    RUN_DIR/
      config.json        model init kwargs (HF from_pretrained reads them) + "modelkit": {model, train}
      run.json           the run record: status, git, env, seed, data, timings, metrics, weights sha256
      metrics.jsonl      one JSON object per line: {"kind": "step"|"epoch", ...}
      model.safetensors  final weights, metadata: model name, config sha256
      checkpoints/       atomic, resumable checkpoints (latest N kept)
      eval.json          written by `modelkit eval`
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.errors import RunDirError
from modelkit.io import write_json_atomic

RUN_FILES = ("config.json", "run.json", "metrics.jsonl", "model.safetensors")
RUN_RECORD_VERSION = 1


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

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
    def eval(self) -> Path:
        return self.path / "eval.json"

    def read_record(self) -> dict[str, Any]:
        """The run record (``run.json``)."""
        return _read_json(self.record, what="run record")

    def read_config(self) -> dict[str, Any]:
        """The saved ``config.json``."""
        return _read_json(self.config, what="run config")

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
        """Atomically (re)write ``run.json``."""
        write_json_atomic(self.record, record)

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
        """All rows of ``metrics.jsonl`` (a torn last line from a crash is ignored)."""
        if not self.metrics.is_file():
            return []
        rows = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows


def _read_json(path: Path, *, what: str) -> dict[str, Any]:
    """Typed read of a run file: missing, unreadable, not JSON or a field of the wrong type
    each give one RunDirError naming the file and key (schemas in modelkit.validation)."""
    from modelkit import validation as v

    schema = {"run.json": v.RunRecordFile, "config.json": v.RunConfigFile}
    return v.read_json_file(path, what=what, error=RunDirError, schema=schema.get(path.name))


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


def prepare_run_dir(path: Path | str, *, overwrite: bool = False) -> RunDir:
    """Create a fresh run directory; refuse a non-empty one unless ``overwrite``."""
    run = RunDir(Path(path))
    p = run.path
    if p.exists() and not p.is_dir():
        raise RunDirError(f"--out {p} exists and is not a directory", hint="choose another path")
    if p.is_dir() and any(p.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"--out {p} exists and is not empty",
                hint="pass --overwrite to replace it, or choose another --out",
            )
        if not (p / "run.json").is_file() and not (p / "config.json").is_file():
            raise RunDirError(
                f"--out {p} is not a modelkit run directory; refusing to delete it",
                hint="choose an empty or new directory",
            )
        shutil.rmtree(p)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(
            f"cannot write to {p}: {exc.strerror or exc}", hint="choose a writable --out directory"
        ) from None
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
