"""The files ``repro`` writes for its child processes and reads back, typed once here.

* :class:`WorkerSpec` — ``LABEL.spec.json``: the config a worker trains, where its run goes
  and its :class:`WorkerOptions` (written by :mod:`modelkit.repro.sides`, read by
  :mod:`modelkit.repro.worker`);
* :class:`StateResult` — ``RUN.result.json`` (a worker) or ``DUMP_DIR/result.json`` (a user
  command's hooks): the final state's sha256 and step, so the parent need not load torch;
* :class:`WorkerError` — ``RUN.error.json`` / ``RUN.error.rankN.json``: a worker's typed error.

Written with :func:`~modelkit.runs.typed.to_plain`, read with
:func:`~modelkit.runs.typed.read_typed`. Importing this module does not import torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from modelkit.errors import RunDirError
from modelkit.runs.typed import read_typed, to_plain

T = TypeVar("T")


def read_payload(cls: type[T], path: Path) -> T:
    """A payload file as ``cls`` (unreadable or of the wrong shape: RunDirError naming it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(
            f"cannot read {path}: {exc}", hint="a repro child process died while writing it"
        ) from None
    return read_typed(cls, data, source=str(path))


def write_payload(obj: Any, path: Path) -> None:
    """Write a payload as JSON (``to_plain``: fields left at None are left out)."""
    path.write_text(json.dumps(to_plain(obj)), encoding="utf-8")


@dataclass(frozen=True)
class WorkerOptions:
    """The :class:`~modelkit.training.options.RunOptions` a worker trains with (JSON-ready)."""

    stop_at_step: int | None = None
    threads: int | None = None
    force_deterministic: bool = False
    fingerprint_every: int | None = None
    perturb: str | None = None
    dump_steps: list[int] = field(default_factory=list)
    dump_dir: str | None = None
    expect_data_fingerprint: str | None = None

    def run_options(self) -> Any:
        """As the training loop's ``RunOptions``."""
        from modelkit.training.options import RunOptions

        return RunOptions(
            stop_at_step=self.stop_at_step,
            threads=self.threads,
            force_deterministic=self.force_deterministic,
            fingerprint_every=self.fingerprint_every,
            perturb=self.perturb,
            dump_steps=tuple(self.dump_steps),
            dump_dir=Path(self.dump_dir) if self.dump_dir else None,
            expect_data_fingerprint=self.expect_data_fingerprint,
        )


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process trains: ``config`` (a TrainConfig as data), ``out`` (its run
    directory) and its options."""

    config: dict[str, Any]
    out: str
    options: WorkerOptions = field(default_factory=WorkerOptions)


@dataclass(frozen=True)
class StateResult:
    """The final state a side computed itself: its sha256 and step."""

    state_sha256: str
    final_step: int


@dataclass(frozen=True)
class WorkerError:
    """A worker's typed error; ``secondary``: a rank stopped because another one failed."""

    message: str
    exit_code: int
    type: str | None = None
    hint: str | None = None
    secondary: bool = False
