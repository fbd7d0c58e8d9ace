"""The harness's shared constants: environment variables the gate sets, the measuring lane,
the metric kinds the gate understands, and the seeding every test starts from."""

from __future__ import annotations

import os
import sys

ENV_DEVICE = "MODELKIT_BENCH_DEVICE"
ENV_OUTCOMES = "MODELKIT_BENCH_OUTCOMES"
ENV_LANE = "MODELKIT_BENCH_LANE"
ENV_CALLGRIND_OUT = "MODELKIT_BENCH_CALLGRIND_OUT"  # the --callgrind-out-file the gate passed
# a folder shared by a side's callgrind processes: each test runs in the one that claims it first
ENV_CLAIMS = "MODELKIT_BENCH_CLAIMS"
ENV_REVERSE = "MODELKIT_BENCH_REVERSE"  # "1": run the tests in reverse order (the second process)
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


def claim(nodeid: str) -> bool:
    """Whether this process runs ``nodeid``: always, unless ``$MODELKIT_BENCH_CLAIMS`` names a
    folder shared with other processes and one of them claimed the test first."""
    folder = os.environ.get(ENV_CLAIMS)
    if not folder:
        return True
    import hashlib

    path = os.path.join(folder, hashlib.sha256(nodeid.encode()).hexdigest()[:32])
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
