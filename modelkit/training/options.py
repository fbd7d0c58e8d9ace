"""Runtime knobs of a training run that are not part of its config (so not of its digest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelkit.runs.perturb import PERTURB_ENV, env_perturb

__all__ = ["PERTURB_ENV", "RunOptions"]


@dataclass(frozen=True)
class RunOptions:
    """Runtime knobs that do not change the config (so not its digest or the weights' metadata).

    ``perturb`` ("STEP:PARAM") is the test hook of :mod:`modelkit.runs.perturb`. ``dump_steps`` write a full
    state checkpoint into ``dump_dir`` at those steps (used by ``modelkit repro`` to name the
    tensors that differ). ``stop_at_step`` ends the run early (a repro prefix).
    """

    stop_at_step: int | None = None
    threads: int | None = None
    force_deterministic: bool = False
    fingerprint_every: int | None = None
    perturb: str | None = None
    dump_steps: tuple[int, ...] = ()
    dump_dir: Path | None = None
    expect_data_fingerprint: str | None = None
    data_placement: str = "auto"  # auto | device | host (pinned host batches, CUDA only)

    @classmethod
    def from_env(cls) -> RunOptions:
        """Options from the environment (only the ``MODELKIT_PERTURB`` test hook)."""
        return cls(perturb=env_perturb())
