"""State dumps (checkpoint-format files a side writes at chosen steps): the final state's sha256.

A dump's metadata holds torch's optimizer and scheduler state dicts (not a modelkit record);
this is the one place ``repro`` reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelkit.repro.payloads import StateResult


def state_sha256(tensors: dict[str, Any], meta: dict[str, Any]) -> str:
    """sha256 of params, buffers and optimizer state (+ scheduler) of a dumped state."""
    from modelkit.training.fingerprint import state_digest

    keep = {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}
    objects = meta.get("objects", {})
    return state_digest(
        keep, {"optimizer": meta["optimizer"], "scheduler": objects.get("scheduler")}
    )


def dump_result(path: Path) -> StateResult:
    """The sha256 and step of the state dumped in ``path`` (a checkpoint-format file)."""
    from modelkit.training.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(path)
    return StateResult(state_sha256=state_sha256(tensors, meta), final_step=int(meta["step"]))
