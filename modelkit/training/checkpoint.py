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
    from modelkit.training.fingerprint import hash_tensors

    return hash_tensors((name, tensors[name]) for name in sorted(tensors)).hexdigest()


def save_checkpoint(
    directory: Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
    objects: dict[str, dict[str, Any]] | None = None,
    keep: int = 2,
) -> Path:
    """Write one checkpoint atomically and prune old ones; returns its path.

    ``objects`` holds JSON-able ``state_dict()``s of stateful helpers (LR scheduler, grad
    scaler); they go into the metadata and are covered by the checksum. ``optimizer`` may be
    None (a loop that checkpoints only the model and its own state).
    """
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
    }
    opt_state = (
        optimizer.state_dict() if optimizer is not None else {"state": {}, "param_groups": []}
    )
    opt_tensors, opt_meta = flatten_optimizer(opt_state)
    tensors.update({k: v.detach().cpu().contiguous().clone() for k, v in opt_tensors.items()})
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous().clone()
    meta = {
        "step": step,
        "state": state,
        "optimizer": opt_meta,
        "objects": objects or {},
        "sha256": _payload_digest(tensors),
    }
    meta["meta_sha256"] = _meta_digest(meta)
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
    if _payload_digest(tensors) != meta.get("sha256") or (
        "meta_sha256" in meta and _meta_digest(meta) != meta["meta_sha256"]
    ):
        raise RunDirError(
            f"checkpoint {path} fails its checksum",
            hint="resume from the previous one with --fallback-checkpoint",
        )
    return tensors, meta


def _meta_digest(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def remove_stale_temps(directory: Path) -> list[str]:
    """Delete temp files a killed writer left behind (``.ckpt-*.tmp``); returns their names."""
    if not directory.is_dir():
        return []
    stale = [
        p
        for p in directory.iterdir()
        if p.name.startswith(f".{PREFIX}") and p.name.endswith(".tmp")
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return [p.name for p in stale]


def find_resume_checkpoint(
    directory: Path, *, fallback: bool = False
) -> tuple[Path | None, dict[str, torch.Tensor], dict[str, Any], list[dict[str, str]]]:
    """The newest checkpoint that verifies: ``(path, tensors, meta, rejected)``.

    A corrupt newest checkpoint raises :class:`RunDirError` unless ``fallback``; then older
    ones are tried and each rejected file is reported in ``rejected``. ``path`` is None when
    no checkpoint exists yet (the run restarts from step 0).
    """
    rejected: list[dict[str, str]] = []
    for path in reversed(list_checkpoints(directory)):
        try:
            tensors, meta = load_checkpoint(path)
        except RunDirError as exc:
            if not fallback:
                raise
            rejected.append({"checkpoint": path.name, "reason": exc.message})
            continue
        return path, tensors, meta, rejected
    if rejected:
        raise RunDirError(
            f"no checkpoint in {directory} verifies ({len(rejected)} corrupt)",
            hint="start the run again with `modelkit train`",
        )
    return None, {}, {}, rejected


def split_tensors(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """``(model_state, optimizer_tensors, extra)`` from a checkpoint's flat tensor dict."""
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "extra": {}}
    for name, t in tensors.items():
        kind, _, rest = name.partition(".")
        groups[kind][rest if kind == "model" else name if kind == "optim" else rest] = t
    return groups["model"], groups["optim"], groups["extra"]
