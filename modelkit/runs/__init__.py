"""The run core: everything that writes or reads a run directory goes through this package.

=========================  =====================================================================
:mod:`~.layout`            the run directory's files (:class:`RunDir`), :func:`open_run`
:mod:`~.record`            typed run.json (:class:`RunRecord`) and metrics rows (:class:`MetricRow`)
:mod:`~.parts`             run.json's blocks typed (:class:`GitInfo`, :class:`DataInfo`, ...)
:mod:`~.documents`         typed config.json (:class:`RunConfig`), eval files (:class:`EvalRecord`)
:mod:`~.typed`             :func:`read_typed`: a JSON record into its dataclass (the one reader)
:mod:`~.transaction`       staging sibling, lock, publish; symlinked run paths resolved first
:mod:`~.opening`           :class:`RunSpec` + :func:`open_session`: the one door for writers
:mod:`~.session`           :class:`RunSession`: rows, fingerprints, checkpoints, finish, fail
:mod:`~.checkpoint`        :class:`Checkpoint`: the one checkpoint type (save, load, restore)
:mod:`~.compat`            does a checkpoint fit the live model/optimizer (before loading)
:mod:`~.seeding` / rng     ``seed_everything``, MODELKIT_SEED/DETERMINISTIC; RNG capture (torch)
:mod:`~.fingerprint`       bitwise state fingerprints (torch)
:mod:`~.perturb`           the one MODELKIT_PERTURB hook
:mod:`~.artifacts`         files a run declares (``run.add_artifact``)
:mod:`~.values`            user values checked at the door (steps, metrics, modules, configs)
:mod:`~.exits`             the error hook of a script, and unfinished runs failed at exit
=========================  =====================================================================

Importing this package does not import torch (``Checkpoint`` is loaded on first use).
"""

from __future__ import annotations

from typing import Any

from modelkit.runs.documents import (
    EvalData,
    EvalRecord,
    ModelkitSection,
    RunConfig,
    read_eval_record,
)
from modelkit.runs.layout import (
    ARTIFACTS_DIR,
    EVALS_DIR,
    RUN_FILES,
    RUN_RECORD_VERSION,
    RunDir,
    latest_run,
    now_iso,
    open_run,
    read_run_record,
)
from modelkit.runs.opening import RunSpec, config_digest, open_session
from modelkit.runs.parts import (
    Accel,
    Best,
    CommandInfo,
    DataInfo,
    Determinism,
    Distributed,
    EnvInfo,
    GitInfo,
    Normalization,
    Reference,
    Timings,
    WeightsInfo,
)
from modelkit.runs.perturb import PERTURB_ENV
from modelkit.runs.record import Artifact, MetricRow, ResumeNote, RunRecord, encode_metrics
from modelkit.runs.seeding import DETERMINISTIC_ENV, SEED_ENV, seed_everything
from modelkit.runs.transaction import (
    RunLock,
    check_run_target,
    clean_stale,
    is_run_dir,
    lock_path,
    publish_run,
    record_status,
    resolve_run_path,
    staging_path,
)

__all__ = [
    "ARTIFACTS_DIR",
    "DETERMINISTIC_ENV",
    "EVALS_DIR",
    "Accel",
    "Best",
    "CommandInfo",
    "DataInfo",
    "Determinism",
    "Distributed",
    "EnvInfo",
    "EvalData",
    "EvalRecord",
    "GitInfo",
    "ModelkitSection",
    "Normalization",
    "Reference",
    "RunConfig",
    "Timings",
    "WeightsInfo",
    "read_eval_record",
    "PERTURB_ENV",
    "RUN_FILES",
    "RUN_RECORD_VERSION",
    "SEED_ENV",
    "Artifact",
    "Checkpoint",
    "MetricRow",
    "RunDir",
    "RunLock",
    "ResumeNote",
    "RunRecord",
    "RunSession",
    "RunSpec",
    "check_run_target",
    "clean_stale",
    "config_digest",
    "encode_metrics",
    "is_run_dir",
    "latest_run",
    "live_dir",
    "lock_path",
    "now_iso",
    "open_run",
    "open_session",
    "publish_run",
    "read_run_record",
    "record_status",
    "resolve_run_path",
    "seed_everything",
    "staging_path",
]


def live_dir(path: Any) -> RunDir:
    """Where a run's files are now: its staging directory while unfinished, else ``path``."""
    import os
    from pathlib import Path

    path = Path(path)
    staging = staging_path(
        Path(os.path.realpath(path))
    )  # a linked run is written beside its target
    return RunDir(staging if staging.is_dir() else path)


def __getattr__(name: str) -> Any:
    if name == "Checkpoint":  # imports torch
        from modelkit.runs.checkpoint import Checkpoint

        return Checkpoint
    if name == "RunSession":
        from modelkit.runs.session import RunSession

        return RunSession
    raise AttributeError(f"module 'modelkit.runs' has no attribute {name!r}")
