"""The run directory: the spine every verb reads, and how it is written as a transaction.

::

    RUN_DIR/
      config.json        model init kwargs (HF from_pretrained reads them) + "modelkit": {model, train}
      run.json           the run record: status, git, env, seed, data, timings, metrics, weights sha256
      metrics.jsonl      one JSON object per line: {"kind": "step"|"epoch", ...}
      model.safetensors  final weights, metadata: model name, config sha256
      checkpoints/       atomic, resumable checkpoints (latest N kept)
      eval.json          written by `modelkit eval`

Writers (``modelkit.tracking``) build a run in ``<parent>/.<name>.partial/`` under the lock
``<parent>/.<name>.lock`` and :func:`publish_run` it; readers type run.json as
:class:`RunRecord` and read weights through :func:`verified_weights`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.errors import RunDirError
from modelkit.io import fsync_dir, write_json_atomic
from modelkit.redact import redact

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
        write_json_atomic(self.record, redact(record))  # secrets never enter a record

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
        lines = self.metrics.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if not isinstance(row, dict):
                raise RunDirError(
                    f"{self.metrics} line {number} is not a JSON object: {line[:40]!r}",
                    hint="each line of metrics.jsonl is one object ({\"step\": ..., ...}); "
                    "remove or fix that line",
                )
            rows.append(row)
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


# ---- the run record as a typed value --------------------------------------------------------


def _record_fields() -> dict[str, tuple[tuple[type, ...], bool]]:
    """``field -> (accepted types, nullable)`` for the typed fields of run.json."""
    return {
        "version": ((int,), False),
        "status": ((str,), False),
        "started": ((str,), True),
        "finished": ((str,), True),
        "trainer": ((str,), False),
        "command": ((dict,), True),
        "model": ((str,), True),
        "seed": ((int,), True),
        "config_sha256": ((str,), True),
        "git": ((dict,), False),
        "env": ((dict,), False),
        "determinism": ((dict,), False),
        "data": ((dict,), False),
        "timings": ((dict,), False),
        "metrics": ((dict,), False),
        "weights_sha256": ((str,), True),
        "fingerprint_every": ((int,), True),
        "num_parameters": ((int,), True),
        "reference": ((dict,), True),
        "steps": ((int,), True),
        "error": ((str,), True),
    }


@dataclass(frozen=True)
class RunRecord:
    """``run.json`` as typed fields (the ones every verb reads); ``raw`` keeps the whole record.

    :meth:`from_dict` names a field of the wrong type, or null where a value is required,
    with the file (exit 2) instead of failing later on a string key.
    """

    status: str
    version: int = RUN_RECORD_VERSION
    started: str | None = None
    finished: str | None = None
    trainer: str = "modelkit"
    command: dict[str, Any] | None = None
    model: str | None = None
    seed: int | None = None
    config_sha256: str | None = None
    git: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    determinism: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None
    fingerprint_every: int | None = None
    num_parameters: int | None = None
    reference: dict[str, Any] | None = None
    steps: int | None = None
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def complete(self) -> bool:
        """True for a finished run (status ``complete``)."""
        return self.status == "complete"

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> RunRecord:
        """Check the types of the known fields of ``data`` (a parsed run.json at ``source``)."""
        if not isinstance(data, dict):
            raise RunDirError(
                f"{source} must hold a JSON object, got {type(data).__name__}",
                hint="the file is corrupt or was edited by hand",
            )
        values: dict[str, Any] = {}
        for key, (types, nullable) in _record_fields().items():
            if key not in data:
                if key == "status":
                    raise RunDirError(
                        f"{source} has no 'status' field", hint="the file is corrupt or incomplete"
                    )
                continue
            value = data[key]
            if value is None:
                if not nullable:
                    raise RunDirError(
                        f"{source}: field '{key}' is null, expected {_names(types)}",
                        hint="the file is corrupt or was edited by hand",
                    )
            elif isinstance(value, bool) and bool not in types or not isinstance(value, types):
                raise RunDirError(
                    f"{source}: field '{key}' must be {_names(types)}, "
                    f"got {type(value).__name__} {json.dumps(value)[:40]}",
                    hint="the file is corrupt or was edited by hand",
                )
            values[key] = value
        return cls(**values, raw=dict(data))

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (``raw`` with the typed fields laid over it)."""
        out = dict(self.raw)
        for key in _record_fields():
            value = getattr(self, key)
            if key in self.raw or value not in (None, {}):
                out[key] = value
        return out


def _names(types: tuple[type, ...]) -> str:
    words = {int: "an integer", str: "a string", dict: "an object", float: "a number"}
    return " or ".join(words.get(t, t.__name__) for t in types)


def read_run_record(run: RunDir | Path | str) -> RunRecord:
    """The typed :class:`RunRecord` of a run directory (exit 2 naming a bad field)."""
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    return RunRecord.from_dict(run.read_record(), source=str(run.record))


# ---- weights are read only through their recorded sha256 ------------------------------------
def verified_weights(run_dir: RunDir | Path | str, *, trust_unrecorded: bool = False) -> Path:
    """The run's ``model.safetensors``, after checking it against run.json's ``weights_sha256``.

    Every reader of a run's (or a release's) weights calls this. A mismatch raises
    :class:`CheckFailed` (exit 3); a record without ``weights_sha256`` (or no run.json at all)
    raises :class:`RunDirError` (exit 2) unless ``trust_unrecorded``.
    """
    from modelkit.errors import CheckFailed
    from modelkit.io import sha256_file

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    if not run.weights.is_file():
        raise RunDirError(
            f"{run.weights} not found", hint="pass a finished run directory (model.safetensors)"
        )
    expected: str | None = None
    if run.record.is_file():
        expected = read_run_record(run).weights_sha256
    if expected is None:
        if trust_unrecorded:
            return run.weights
        raise RunDirError(
            f"{run.path} records no weights_sha256 for {run.weights.name}, "
            "so the weights cannot be checked",
            hint="pass --trust-unrecorded (trust_unrecorded=True) only if you trust these weights",
        )
    actual = sha256_file(run.weights)
    if actual != expected:
        raise CheckFailed(
            f"{run.weights} sha256 {actual[:12]}… does not match run.json ({expected[:12]}…)",
            hint="the weights were modified after training; re-train or restore them",
        )
    return run.weights


# ---- the run directory as a transaction: staging sibling, lock, publish ---------------------
def staging_path(path: Path) -> Path:
    """Where the run at ``path`` is written until it is finished: ``<parent>/.<name>.partial``."""
    return path.parent / f".{path.name}.partial"


def lock_path(path: Path) -> Path:
    """The writer's lock file for the run at ``path``: ``<parent>/.<name>.lock``."""
    return path.parent / f".{path.name}.lock"


def _old_paths(path: Path) -> list[Path]:
    if not path.parent.is_dir():
        return []
    prefix = f".{path.name}.old-"
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix))


class RunLock:
    """An exclusive, non-blocking ``flock`` on the lock file; the holder's pid is written in it."""

    def __init__(self, path: Path, *, target: Path) -> None:
        import fcntl

        self.path = path
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunDirError(
                    f"{target} is being written by another process (pid {_holder(path)})",
                    hint="wait for that run to finish, or write to another directory",
                ) from None
            # the file may have been unlinked by a releasing holder between open and flock
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self.fd: int | None = fd

    def release(self) -> None:
        """Unlink the lock file, then drop the lock (idempotent)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def is_run_dir(p: Path) -> bool:
    return (p / "run.json").is_file() or (p / "config.json").is_file()


def record_status(p: Path) -> str | None:
    try:
        data = json.loads((p / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("status") if isinstance(data, dict) else None


def check_run_target(path: Path, *, overwrite: bool, resume: bool) -> str:
    """What is at ``path`` now: 'absent' | 'empty' | 'complete' | 'incomplete' (or refuse)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} exists and is not a directory", hint="choose another run path")
    if not path.exists():
        return "absent"
    try:
        empty = not any(path.iterdir())
    except OSError as exc:
        raise RunDirError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check permissions"
        ) from None
    if empty:
        return "empty"
    if not is_run_dir(path):
        raise RunDirError(
            f"{path} exists and is not a modelkit run directory; refusing to replace it",
            hint="choose an empty or new directory",
        )
    status = record_status(path)
    if status == "complete":
        if not overwrite:
            raise RunDirError(
                f"{path} already holds a complete run",
                hint="pass overwrite=True (--overwrite) to replace it once the new run "
                "succeeds, or choose another directory",
            )
        return "complete"
    if not (overwrite or resume):
        raise RunDirError(
            f"{path} holds an unfinished run (status: {status})",
            hint="pass resume=True (--resume) to continue it, or overwrite=True to replace it",
        )
    return "incomplete"


def clean_stale(path: Path, staging: Path) -> list[str]:
    """Undo or finish what a writer killed mid-publish left behind; returns what was removed."""
    removed = []
    for old in _old_paths(path):
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old.name)
        else:  # killed between moving the old run aside and moving the new one in
            os.replace(old, path)
    for directory in (staging, staging / "checkpoints"):
        if directory.is_dir():
            for p in directory.iterdir():
                if p.name.startswith(".") and p.name.endswith(".tmp"):
                    p.unlink(missing_ok=True)
                    removed.append(f"{directory.name}/{p.name}")
    return removed


def publish_run(staging: Path, target: Path) -> None:
    """Move a finished staging directory to ``target``, replacing what is there (atomically
    where the OS can swap two directories; else old aside, new in, old removed)."""
    fsync_dir(staging)
    if target.exists():
        if not any(target.iterdir()):
            target.rmdir()
        elif _exchange(staging, target):  # the new run in place, the old one at staging
            shutil.rmtree(staging)
            fsync_dir(target.parent)
            return
        else:
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(staging, target)
            fsync_dir(target.parent)
            shutil.rmtree(old)
            return
    os.replace(staging, target)
    fsync_dir(target.parent)
