"""The one perturbation hook: ``MODELKIT_PERTURB=STEP:PARAM`` moves one parameter by one ULP.

A test hook for ``modelkit repro``'s localisation: after the step STEP (0 = before training)
the first element of parameter PARAM moves to the next float towards +inf. Own loops get it
from :meth:`modelkit.Run.log`, the built-in trainer after its step; a run so perturbed is
recorded as ``perturbed`` (never a real result). Importing this module does not import torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from modelkit.errors import BadInputError, did_you_mean

PERTURB_ENV = "MODELKIT_PERTURB"


@dataclass(frozen=True)
class Perturbation:
    """A parsed ``STEP:PARAM`` bound to the live parameter."""

    spec: str
    step: int
    param: Any

    def apply(self, step: int) -> None:
        """Nudge the parameter when ``step`` is the perturbed one."""
        if step == self.step:
            nudge(self.param)


def env_perturb() -> str | None:
    """The ``MODELKIT_PERTURB`` spec of this process (None when unset)."""
    return os.environ.get(PERTURB_ENV) or None


def parse_perturb(spec: str | None, model: Any) -> Perturbation | None:
    """``"STEP:PARAM"`` bound to ``model``'s parameter; None for no spec; bad spec: exit 2."""
    if not spec:
        return None
    if model is None:
        raise BadInputError(
            f"{PERTURB_ENV}='{spec}' needs the model", hint="pass model= to start_run"
        )

    step_s, _, name = spec.partition(":")
    params = dict(unwrap(model).named_parameters())
    if not step_s.isdigit() or name not in params:
        raise BadInputError(
            f"{PERTURB_ENV}='{spec}' must be STEP:PARAM{did_you_mean(name, params)}",
            hint=f"parameters: {', '.join(params)}",
        )
    return Perturbation(spec=spec, step=int(step_s), param=params[name])


def nudge(param: Any) -> None:
    """Move the first element of ``param`` by one ULP towards +inf."""
    import torch

    with torch.no_grad():
        p = param.view(-1)
        p[0] = torch.nextafter(p[0], torch.tensor(math.inf, dtype=p.dtype, device=p.device))


def unwrap(model: Any) -> Any:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile
        if inner is None and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            inner = getattr(model, "module", None)
        if inner is None:
            return model
        model = inner
