"""Runtime knobs of a training run that are not part of its config (so not of its digest)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError

PERTURB_ENV = "MODELKIT_PERTURB"


@dataclass(frozen=True)
class RunOptions:
    """Runtime knobs that do not change the config (so not its digest or the weights' metadata).

    ``perturb`` ("STEP:PARAM") is a test hook: after optimizer step STEP (0 = before training)
    the first element of parameter PARAM is moved by one ULP. ``dump_steps`` write a full
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
        return cls(perturb=os.environ.get(PERTURB_ENV) or None)


def parse_perturb(spec: str, model: Any) -> tuple[int, Any]:
    """``"STEP:PARAM"`` -> (step, the parameter tensor); a bad spec is exit 2."""
    step_s, _, name = spec.partition(":")
    params = dict(model.named_parameters())
    if not step_s.isdigit() or name not in params:
        from modelkit.errors import did_you_mean

        raise BadInputError(
            f"{PERTURB_ENV}='{spec}' must be STEP:PARAM{did_you_mean(name, params)}",
            hint=f"parameters: {', '.join(params)}",
        )
    return int(step_s), params[name]
