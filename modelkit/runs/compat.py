"""Does a checkpoint fit the live model and optimizer? Checked before anything is loaded.

A resume with a model of another architecture, or an optimizer of another kind or with other
parameter groups, is refused with :class:`~modelkit.errors.CheckpointMismatch` (exit 2)
naming what differs, instead of failing halfway through ``load_state_dict``.
"""

from __future__ import annotations

from typing import Any

from modelkit.errors import CheckpointMismatch


def check_model_fits(saved: dict[str, Any], model: Any, *, where: str) -> None:
    """The checkpoint's model tensors have the live model's names and shapes."""
    live = model.state_dict()
    missing = sorted(set(live) - set(saved))
    unexpected = sorted(set(saved) - set(live))
    shapes = [
        f"{k}: {tuple(saved[k].shape)} vs {tuple(live[k].shape)}"
        for k in sorted(set(saved) & set(live))
        if tuple(saved[k].shape) != tuple(live[k].shape)
    ]
    problems = [
        f"{label} {_few(names)}"
        for label, names in (
            ("the model lacks", missing),
            ("the checkpoint has extra", unexpected),
            ("shapes differ:", shapes),
        )
        if names
    ]
    if problems:
        raise CheckpointMismatch(where, what="model", problems=problems)


def check_optimizer_fits(saved: dict[str, Any] | None, optimizer: Any, *, where: str) -> None:
    """The checkpoint's optimizer state has the live optimizer's groups and state keys."""
    if saved is None:
        return
    live = optimizer.state_dict()
    sg, lg = saved.get("param_groups", []), live["param_groups"]
    problems = []
    if len(sg) != len(lg):
        problems.append(f"{len(sg)} parameter group(s) saved, {len(lg)} now")
    else:
        for i, (a, b) in enumerate(zip(sg, lg, strict=True)):
            if len(a.get("params", [])) != len(b["params"]):
                problems.append(
                    f"group {i} has {len(a.get('params', []))} parameters saved, "
                    f"{len(b['params'])} now"
                )
            keys = set(a) ^ set(b)
            if keys:
                problems.append(f"group {i} options differ ({', '.join(sorted(map(str, keys)))})")
    state_keys = {k for entry in saved.get("state", {}).values() for k in entry}
    live_keys = _live_state_keys(optimizer)
    if state_keys and live_keys is not None and state_keys != live_keys:
        problems.append(
            f"state holds {', '.join(sorted(state_keys))}; "
            f"this optimizer keeps {', '.join(sorted(live_keys))}"
        )
    if problems:
        raise CheckpointMismatch(
            where, what=f"optimizer ({type(optimizer).__name__})", problems=problems
        )


def _live_state_keys(optimizer: Any) -> set[str] | None:
    """The per-parameter state keys the optimizer keeps now (None before its first step)."""
    keys = {k for entry in optimizer.state_dict()["state"].values() for k in entry}
    return keys or None


def _few(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
