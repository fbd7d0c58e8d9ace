"""Weights I/O for run directories: safetensors with metadata, rebuilt from config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from modelkit.errors import RunDirError


def save_weights(model: torch.nn.Module, path: Path, *, metadata: dict[str, str]) -> None:
    """Save ``model``'s state to ``path`` as safetensors, atomically."""
    from safetensors.torch import save_model

    from modelkit.io import atomic_path

    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata=metadata)
        canonicalise_header(tmp)


def canonicalise_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys, in place (same length).

    safetensors serialises ``__metadata__`` from a hash map, so its key order (and the file's
    sha256) changes from process to process; sorted keys make equal weights equal files.
    """
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(body) > size:  # cannot happen for the same content; keep the original then
            return
        f.seek(8)
        f.write(body + b" " * (size - len(body)))


def model_config(name: str, kwargs: dict[str, Any], train_config: dict[str, Any]) -> dict[str, Any]:
    """The run's config.json: HF-style flat model kwargs + the full modelkit config."""
    return {**json.loads(json.dumps(kwargs)), "modelkit": {"model": name, "train": train_config}}


def load_model_from_dir(
    directory: Path,
    *,
    project: Any = None,
    device: str | torch.device = "cpu",
    trust_unrecorded: bool = False,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a run (or a release) describes and load its weights (strict).

    The weights are checked against run.json's ``weights_sha256`` first
    (:func:`modelkit.runs.verified_weights`); the model is built from ``modelkit.reference``
    when config.json has one, else from the model name (runs made before references).
    """
    from safetensors.torch import load_model

    from modelkit.runs import verified_weights

    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise RunDirError(f"{cfg_path} not found", hint="pass a run directory made by modelkit")
    weights = verified_weights(directory, trust_unrecorded=trust_unrecorded)
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    meta = cfg.get("modelkit", {})
    name = meta.get("model")
    model = _build_from_config(meta, source=str(cfg_path), project=project)
    try:
        load_model(model, str(weights), strict=True, device=str(device))
    except Exception as exc:
        raise RunDirError(
            f"weights in {weights} do not fit model '{name}': {str(exc).splitlines()[0]}",
            hint="the run's config.json and model.safetensors disagree",
        ) from None
    return model.to(device).eval(), cfg


def _build_from_config(meta: dict[str, Any], *, source: str, project: Any) -> torch.nn.Module:
    """The model from config.json's ``modelkit`` table: its reference, else its registry name."""
    if "reference" in meta:
        from modelkit.models.reference import ModelReference

        return ModelReference.from_dict(meta["reference"], source=source).build()
    from modelkit.models.registry import build_model

    name = meta.get("model")
    if not name:
        raise RunDirError(
            f"{source} does not name its model (modelkit.reference or modelkit.model)",
            hint="was it written by modelkit?",
        )
    kwargs = meta.get("train", {}).get("model_kwargs", {})
    model, _ = build_model(name, project=project, kwargs=kwargs)
    return model
