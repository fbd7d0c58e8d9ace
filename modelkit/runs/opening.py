"""Opening a run for writing: what it is told (:class:`RunSpec`), the lock, the staging directory,
and the first run.json (a new run) or the checked old one (a resumed run).

:func:`open_session` is the one door every writer goes through: :func:`modelkit.start_run`
(a user's loop), the built-in trainer (:mod:`modelkit.training.record`) and the framework
callbacks. The path is resolved (symbolic links followed) and refused before anything is
written; then the lock is taken and the target checked again under it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelkit.data.fingerprint import UNKNOWN, data_summary
from modelkit.env import diff_environments, environment
from modelkit.errors import DataError, RunDirError
from modelkit.gitinfo import git_info
from modelkit.redact import redact
from modelkit.runs.layout import RUN_RECORD_VERSION, now_iso
from modelkit.runs.transaction import (
    RunLock,
    check_run_target,
    clean_stale,
    is_run_dir,
    lock_path,
    record_status,
    resolve_run_path,
    staging_path,
)

if TYPE_CHECKING:
    from modelkit.runs.session import RunSession


@dataclass
class RunSpec:
    """What a writer tells the core about a run it opens.

    ``config`` is stored in config.json under ``modelkit.<config_key>`` ("config": a user's
    hyperparameters; "train": the built-in trainer's TrainConfig) and digested as
    ``config_sha256``. ``determinism``: the block to record (None: seed now from ``seed`` /
    ``deterministic``, see :func:`modelkit.runs.seeding.run_determinism`). ``reference`` /
    ``name``: how to rebuild the model and what to call it (None: from the model at finish).
    ``record_extra``: more run.json fields; ``hooks``: ``modelkit repro``'s (user loops).
    """

    config: dict[str, Any] = field(default_factory=dict)
    config_key: str = "config"
    model: Any = None
    data: Any = None
    seed: int | None = None
    deterministic: bool | None = None
    determinism: dict[str, Any] | None = None
    reference: Any = None
    name: str | None = None
    fingerprint_every: int = 25
    trainer: str = "user"
    device: Any = None
    record_extra: dict[str, Any] = field(default_factory=dict)
    project_root: Path | None = None
    hooks: Any = None


@dataclass(frozen=True)
class Opened:
    """Where a session writes and what it found there."""

    target: Path
    staging: Path
    lock: RunLock
    replaces: bool  # a complete or unfinished run is at target (replaced at publish)
    resumed: bool  # the staging directory of an unfinished run is continued
    removed: list[str]  # temp files of a killed writer that were cleaned up


def open_session(
    path: Path | str, spec: RunSpec, *, overwrite: bool = False, resume: bool = False
) -> RunSession:
    """Lock the run at ``path`` and open its staging directory (a transaction, see
    :mod:`modelkit.runs.transaction`); refuses before writing anything."""
    from modelkit.runs.session import RunSession

    target = resolve_run_path(path)
    check_run_target(target, overwrite=overwrite, resume=resume)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = RunLock(lock_path(target), target=target)
    except OSError as exc:
        raise RunDirError(
            f"cannot write next to {target}: {exc.strerror or exc}",
            hint="choose a writable run directory",
        ) from None
    try:
        return RunSession(_prepare(target, lock, overwrite=overwrite, resume=resume), spec)
    except BaseException:
        lock.release()
        raise


def _prepare(target: Path, lock: RunLock, *, overwrite: bool, resume: bool) -> Opened:
    """Under the lock: clean up after a killed writer, re-check the target, make staging."""
    staging = staging_path(target)
    removed = clean_stale(target, staging)
    # re-check under the lock: another writer may have finished in between
    state = check_run_target(target, overwrite=overwrite, resume=resume)
    if state == "incomplete" and resume:  # an old-style run killed in place: adopt it
        if staging.exists():
            raise RunDirError(
                f"both {target} (unfinished) and {staging} exist; cannot tell which to resume",
                hint=f"remove the one you do not want (rm -r {staging})",
            )
        os.replace(target, staging)
        state = "absent"
    resumed = (
        resume
        and staging.is_dir()
        and is_run_dir(staging)
        and record_status(staging) != "complete"  # an old run swapped out, not yet removed
    )
    if staging.exists() and not resumed:
        if (
            any(staging.iterdir())
            and not is_run_dir(staging)
            and not (staging / "checkpoints").is_dir()
        ):
            raise RunDirError(
                f"{staging} exists and is not a modelkit staging directory; refusing to delete it",
                hint="move it away",
            )
        shutil.rmtree(staging)
    try:
        staging.mkdir(exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"cannot create {staging}: {exc.strerror or exc}", hint="choose a writable directory"
        ) from None
    replaces = state in ("complete", "incomplete")
    return Opened(target, staging, lock, replaces, bool(resumed), removed)


# ---- run.json of a new run ---------------------------------------------------------------------
def base_record(
    spec: RunSpec, *, digest: str, determinism: dict[str, Any], model: Any, ref: Any
) -> dict[str, Any]:
    """The first run.json of a new run (status running)."""
    return {
        "version": RUN_RECORD_VERSION,
        "status": "running",
        "started": now_iso(),
        "trainer": spec.trainer,
        "command": redact(
            {
                "argv": list(sys.argv),
                "cwd": os.getcwd(),
                "executable": sys.executable,
                "orig_argv": list(getattr(sys, "orig_argv", sys.argv)),
            }
        ),
        "model": spec.name,
        "reference": ref.to_dict() if ref is not None else None,
        "seed": determinism.get("seed"),
        "config": spec.config,
        "config_sha256": digest,
        "git": git_info(spec.project_root or Path.cwd()),
        "env": environment(model_device(model, spec.device)),
        "determinism": determinism,
        "data": data_summary(spec.data),
        "fingerprint_every": spec.fingerprint_every,
        "num_parameters": num_parameters(model),
        "timings": {},
        "metrics": {},
        **spec.record_extra,
    }


def resume_entry(
    record: Any, spec: RunSpec, *, path: Path, model: Any, removed: list[str]
) -> dict[str, Any]:
    """Refuse other data than the run started on; the new ``resumes`` entry (env diff)."""
    recorded = record.data_fingerprint or UNKNOWN
    if spec.data is not None and recorded != UNKNOWN:
        now = data_summary(spec.data)["fingerprint"]
        if now != recorded:
            raise DataError(
                f"cannot resume {path}: the data has fingerprint {now}, "
                f"the run started on {recorded}",
                hint="resume only on the data the run started with",
            )
    return {
        "at": now_iso(),
        "removed_temp_files": removed,
        "env_diff": diff_environments(
            record.env.as_dict(), environment(model_device(model, spec.device))
        ),
    }


def model_device(model: Any, device: Any) -> Any:
    """``device``, else the device of the model's first parameter (None without a model)."""
    if device is None and model is not None:
        device = next((p.device for p in model.parameters()), None)
    return device


def num_parameters(model: Any) -> int | None:
    """The model's parameter count (None without a model)."""
    if model is None:
        return None
    return int(sum(p.numel() for p in model.parameters()))


# ---- configs -----------------------------------------------------------------------------------
def config_digest(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``config`` (as ``TrainConfig.digest`` computes it)."""
    return hashlib.sha256(
        (json.dumps(config, sort_keys=True, indent=2) + "\n").encode()
    ).hexdigest()


_MISSING = object()


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``["lr (0.1 -> 0.2)", ...]``: the keys whose values differ, nested keys dotted."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({_show(a)} -> {_show(b)})")
    return out


def _show(value: Any) -> str:
    return "unset" if value is _MISSING else json.dumps(value)[:40]
