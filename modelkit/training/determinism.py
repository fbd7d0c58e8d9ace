"""Moved to :mod:`modelkit.runs.rng`; kept for imports."""

from modelkit.runs.rng import (
    DATA_ORDER,
    capture_rng,
    configure_determinism,
    determinism_state,
    epoch_permutation,
    restore_rng,
    seed_all,
)

__all__ = [
    "DATA_ORDER",
    "capture_rng",
    "configure_determinism",
    "determinism_state",
    "epoch_permutation",
    "restore_rng",
    "seed_all",
]
