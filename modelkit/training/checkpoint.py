"""Moved to :mod:`modelkit.runs.checkpoint` (the one :class:`Checkpoint` type); kept for imports."""

from modelkit.runs.checkpoint import (
    PREFIX,
    SUFFIX,
    Checkpoint,
    checkpoint_file,
    list_checkpoints,
    load_checkpoint,
)

__all__ = [
    "PREFIX",
    "SUFFIX",
    "Checkpoint",
    "checkpoint_file",
    "list_checkpoints",
    "load_checkpoint",
]
