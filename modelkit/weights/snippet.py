"""The plain-PyTorch loading snippet for a model card: ``model.load_state_dict(...)`` that works
for either layout and for shared (tied) tensors stored once.

A shared tensor is stored under one name; a plain ``load_state_dict`` then reports the other
name missing. The snippet puts it back (``state["lm_head.weight"] = state["wte.weight"]``)
before loading, so it needs nothing but torch, safetensors and the model's own package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelkit.models.configs import RecordedConfig, config_expression
from modelkit.runs.typed import read_typed, to_plain
from modelkit.weights.layout import INDEX, SINGLE, WeightsLayout


@dataclass(frozen=True)
class SnippetWeights:
    """What a snippet needs to know of the weights (as the card's facts give them): whether
    they are sharded, and the shared tensors (dropped name -> stored name)."""

    sharded: bool | None = None
    shared: dict[str, str] | None = None


def _kwargs_literal(kwargs: dict[str, Any]) -> str:
    """``kwargs`` as Python source (JSON values: true/false/null become True/False/None)."""
    return repr(json.loads(json.dumps(kwargs, sort_keys=True)))


def loading_snippet(
    layout: WeightsLayout | None,
    *,
    reference: str,
    kwargs: dict[str, Any],
    folder: str,
    sharded: bool | None = None,
    shared: dict[str, str] | None = None,
    imports: tuple[str, ...] = (),
    configs: dict[str, RecordedConfig] | None = None,
) -> str:
    """Python code that rebuilds the model and loads the weights found in ``folder`` (a Python
    expression, e.g. ``snapshot_download(...)``) with a plain ``load_state_dict``.

    ``reference`` is ``module:attr`` (a class or factory) called with ``kwargs`` and the config
    objects ``configs`` describes (``modelkit.models.configs``); a transformers model loads with
    its own ``from_pretrained(folder)`` instead. The layout and the shared tensors come from
    ``layout`` (or ``sharded``/``shared`` without one); ``imports`` are the lines ``folder`` needs.
    """
    module, _, attr = reference.partition(":")
    top = attr.split(".")[0]
    configs = configs or {}
    if any(c.kind == "transformers" for c in configs.values()):
        return "\n".join(
            [*imports, f"from {module} import {top}", "", f"folder = {folder}",
             f"model = {attr}.from_pretrained(folder)  # transformers' own loader", "model.eval()"]
        ) + "\n"  # fmt: skip
    if layout is not None:
        sharded, shared = layout.kind == "sharded", layout.shared
    config_imports, build = _build_line(attr, kwargs, configs)
    lines = [
        "import json, os" if sharded else "import os",
        "",
        *imports,
        "from safetensors.torch import load_file",
        *config_imports,
        f"from {module} import {top}",
        "",
        f"folder = {folder}",
        build,
    ]
    if sharded:
        lines += [
            f'with open(os.path.join(folder, "{INDEX}")) as f:',
            '    shards = sorted(set(json.load(f)["weight_map"].values()))',
            "state = {}",
            "for shard in shards:  # one shard at a time",
            "    state.update(load_file(os.path.join(folder, shard)))",
        ]
    else:
        lines.append(f'state = load_file(os.path.join(folder, "{SINGLE}"))')
    if shared:
        lines.append("# shared (tied) tensors are stored once: point each other name at it")
        lines += [f'state["{d}"] = state["{k}"]' for d, k in sorted(shared.items())]
    lines += ["model.load_state_dict(state)  # strict: every key must match", "model.eval()"]
    return "\n".join(lines) + "\n"


def _build_line(
    attr: str, kwargs: dict[str, Any], configs: dict[str, RecordedConfig]
) -> tuple[list[str], str]:
    """The config classes' import lines and ``model = attr(...)`` (config objects rebuilt)."""

    if not configs:
        return [], f"model = {attr}(**{_kwargs_literal(kwargs)})"
    built = {k: config_expression(v) for k, v in sorted(configs.items())}
    args = [f"{k}={expr}" for k, (_, expr) in built.items()]
    if kwargs:
        args.append(f"**{_kwargs_literal(kwargs)}")
    return sorted({line for line, _ in built.values()}), f"model = {attr}({', '.join(args)})"


def release_snippet(
    reference: str,
    kwargs: dict[str, Any],
    *,
    weights: dict[str, Any],
    repo_id: str,
    revision: str,
    registry: str | None = None,
    configs: dict[str, RecordedConfig] | None = None,
) -> str:
    """:func:`loading_snippet` for a release on the Hub, or in a local registry (``registry``);
    ``weights`` holds ``sharded`` and ``shared`` (as the card's facts give them)."""
    where = f", cache_dir={registry!r}, local_files_only=True" if registry else ""
    facts = read_typed(SnippetWeights, to_plain(weights), source="the card's weights facts")
    return loading_snippet(
        None,
        reference=reference,
        kwargs=kwargs,
        folder=f"snapshot_download({repo_id!r}, revision={revision!r}{where})",
        sharded=bool(facts.sharded),
        shared=dict(facts.shared or {}),
        imports=("from huggingface_hub import snapshot_download",),
        configs=configs,
    )
