"""Checkpoints without pickle: tensors in safetensors, everything else in JSON metadata.

A checkpoint file ``ckpt-{step:08d}.safetensors`` holds the model (``model.*``), the
optimizer state (``optim.*``) and any extra tensors (``extra.*``, e.g. RNG states);
``__meta__`` (JSON) holds step/epoch/position, optimizer param groups and the payload's
sha256 so a truncated or corrupt file is detected. Writes are atomic
(temp + fsync + rename) and only the newest ``keep`` are kept.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from modelkit.errors import RunDirError
from modelkit.io import atomic_path

PREFIX, SUFFIX = "ckpt-", ".safetensors"


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def _payload_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(
            t.numpy().tobytes()
            if t.dtype != torch.bfloat16
            else t.view(torch.int16).numpy().tobytes()
        )
    return h.hexdigest()


def save_checkpoint(
    directory: Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write one checkpoint atomically and prune old ones; returns its path."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
    }
    opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
    tensors.update({k: v.detach().cpu().contiguous().clone() for k, v in opt_tensors.items()})
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous().clone()
    meta = {"step": step, "state": state, "optimizer": opt_meta, "sha256": _payload_digest(tensors)}
    path = directory / f"{PREFIX}{step:08d}{SUFFIX}"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"__meta__": json.dumps(meta, sort_keys=True)})
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX)
    )


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one checkpoint: ``(tensors, meta)``; corrupt files raise RunDirError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["__meta__"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:
        raise RunDirError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__})",
            hint="resume from the previous one with --fallback-checkpoint",
        ) from None
    if _payload_digest(tensors) != meta.get("sha256"):
        raise RunDirError(
            f"checkpoint {path} fails its checksum",
            hint="resume from the previous one with --fallback-checkpoint",
        )
    return tensors, meta


def split_tensors(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """``(model_state, optimizer_tensors, extra)`` from a checkpoint's flat tensor dict."""
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "extra": {}}
    for name, t in tensors.items():
        kind, _, rest = name.partition(".")
        groups[kind][rest if kind != "optim" else name] = t
    return groups["model"], groups["optim"], groups["extra"]
