"""The harness's shared constants: environment variables the gate sets, the measuring lane,
the metric kinds the gate understands, and the seeding every test starts from."""

from __future__ import annotations

import os
import sys

ENV_DEVICE = "MODELKIT_BENCH_DEVICE"
ENV_OUTCOMES = "MODELKIT_BENCH_OUTCOMES"
ENV_LANE = "MODELKIT_BENCH_LANE"
ENV_CALLGRIND_OUT = "MODELKIT_BENCH_CALLGRIND_OUT"  # the --callgrind-out-file the gate passed
EXTRA_KEY = "modelkit"
LANES = ("time", "instructions")
SEED = 0

# metric kinds understood by the gate (modelkit.bench.deciders); "info" is shown, not judged
KINDS = ("timing", "rate", "exact", "memory", "accuracy", "quality", "instructions", "info")
JUDGED_KINDS = tuple(k for k in KINDS if k != "info")
DIRECTIONS = ("higher", "lower")


def lane() -> str:
    """The measuring lane of this process: ``time`` or ``instructions``."""
    value = os.environ.get(ENV_LANE) or "time"
    return value if value in LANES else "time"


def seed_everything(seed: int = SEED) -> None:
    """Seed ``random``, numpy and torch (those already imported) so every side and process
    builds identical inputs and initial weights."""
    import random

    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        torch.manual_seed(seed)
