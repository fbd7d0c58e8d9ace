"""Models rebuilt from a run's config.json and loaded from its weights (either layout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from modelkit.errors import RunDirError
from modelkit.io import atomic_path
from modelkit.models.imports import add_fallback_paths
from modelkit.models.registry import build_model
from modelkit.runs.documents import RunConfig
from modelkit.runs.layout import recorded_roots
from modelkit.weights import WeightsLayout, verified_weights
from modelkit.weights.load import empty_parameters, load_weights


def save_weights(model: torch.nn.Module, path: Path, *, metadata: dict[str, str]) -> None:
    """Save ``model``'s state to ``path`` as safetensors, atomically."""
    from safetensors.torch import save_model

    from modelkit.weights.save import canonicalise_header

    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata=metadata)
        canonicalise_header(tmp)


def build_from_config(
    cfg: RunConfig | dict[str, Any], *, source: str, project: Any = None
) -> tuple[torch.nn.Module, str]:
    """Rebuild the (untrained) model a config.json describes; returns ``(module, description)``.

    Goes through ``modelkit.reference`` (portable); runs written before references existed
    fall back to resolving ``modelkit.model`` in the registry or the project.
    """

    directory = Path(source).parent  # a release may carry the model's source; run.json where
    add_fallback_paths([directory, *recorded_roots(directory)])  # the script ran
    config = cfg if isinstance(cfg, RunConfig) else _typed_config(cfg, source)
    if not config.has_modelkit_section:
        raise RunDirError(f"{source} has no 'modelkit' table", hint="was it written by modelkit?")
    ref = config.model_reference(source=source)
    if ref is not None:
        return ref.build(), ref.ref

    name = config.modelkit.model
    if not name:
        raise RunDirError(
            f"{source} does not name its model (modelkit.reference or modelkit.model)",
            hint="was it written by modelkit?",
        )
    model, _ = build_model(name, project=project, kwargs=config.train_model_kwargs)
    return model, str(name)


def _typed_config(cfg: Any, source: str) -> RunConfig:
    if not isinstance(cfg, dict):
        raise RunDirError(f"{source} has no 'modelkit' table", hint="was it written by modelkit?")
    return RunConfig.from_dict(cfg, source=source)


def build_empty(
    cfg: RunConfig | dict[str, Any], *, source: str, project: Any = None
) -> tuple[Any, str]:
    """:func:`build_from_config` with the parameters on ``meta``: no memory, no random init."""

    with empty_parameters():
        return build_from_config(cfg, source=source, project=project)


def read_config(directory: Path) -> dict[str, Any]:
    """The ``config.json`` of a run or release directory (exit 2 when missing or not JSON)."""
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise RunDirError(f"{cfg_path} not found", hint="pass a run directory made by modelkit")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RunDirError(f"{cfg_path} is not JSON: {exc}", hint="the file is corrupt") from None
    return cfg


def load_model_from_dir(
    directory: Path,
    *,
    project: Any = None,
    device: str | torch.device = "cpu",
    trust_unrecorded: bool = False,
    layout: WeightsLayout | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a run (or a release) describes and load its weights (strict).

    The weights' files are checked against run.json's record (and a release's manifest)
    first (:func:`modelkit.weights.verified_weights`), unless ``layout`` was verified
    already; the model is built on ``meta`` from ``modelkit.reference`` (else from the model
    name, runs made before references) and loaded shard by shard with ``assign=True``.
    """

    directory = Path(directory)
    cfg = read_config(directory)
    if layout is None:
        layout = verified_weights(directory, trust_unrecorded=trust_unrecorded)
    model, name = build_empty(cfg, source=str(directory / "config.json"), project=project)
    load_weights(model, layout, name=name, device=device)
    return model.eval(), cfg


def check_model_loads(
    directory: Path, layout: WeightsLayout, *, project: Any = None
) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """Check that the weights load into the model config.json describes (strict, shard by
    shard, each shard dropped after it loaded); returns the empty model, the config, its name."""

    cfg = read_config(Path(directory))
    model, name = build_empty(cfg, source=str(Path(directory) / "config.json"), project=project)
    load_weights(model, layout, name=name, keep=False)
    return model, cfg, name
