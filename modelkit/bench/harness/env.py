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

# With instruction_isa = "sse4" the instruction lane caps MKL and oneDNN at SSE4: valgrind
# 3.19 runs their AVX2 kernels 100-400x slower than native (measured on this repo's CPU runner:
# a 512x128 @ 128x384 linear 1.18 s -> 0.008 s per call, a small-CNN train step 2.4 s -> 0.09 s,
# a 2-layer GPT train step 33 s -> 1.4 s; no re-translation: the time goes to running the
# translated AVX2 code). Both sides run the same kernels, so the counts compare the same code;
# the time lane and native runs keep the fast kernels. Kept in the harness (not the runner) so
# that changing these values changes the harness digest, hence every cached side's key.
INSTRUCTION_LANE_ENV = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"}

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
    if "numpy" in sys.modules:  # seeded only when the suite imported it (no import cost)
        import numpy

        numpy.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        if hasattr(torch, "manual_seed"):
            torch.manual_seed(seed)
