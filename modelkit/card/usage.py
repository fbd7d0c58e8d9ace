"""The card's "How to use" text: exactly what loads a release from where it lives (the Hub or a
local registry), with modelkit, plain PyTorch or transformers, and the mixin's own loader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelkit.card.facts import ArchFacts, known
from modelkit.runs.documents import read_config_args
from modelkit.weights.snippet import release_snippet

PLACEHOLDER_REPO = "YOUR-ORG/YOUR-MODEL"


PLACEHOLDER_VERSION = "vX.Y"


@dataclass(frozen=True)
class UsageTarget:
    """Where a release lives, for the card's loading snippet."""

    kind: str  # "hub" | "local"
    repo_id: str
    version: str
    registry: str | None = None  # a local registry's absolute path


def _install_needs(arch: ArchFacts) -> str:
    """What to ``pip install`` for the model's module: modelkit and the package providing it."""
    ref = arch.reference
    module = (ref.ref or f"{arch.module}:").partition(":")[0]
    package, version = ref.package, ref.version
    if package and package != "modelkit":
        needs = (
            f"`pip install modelkit '{package}=={version}'`"
            if version
            else f"`pip install modelkit {package}`"
        )
        return needs + f" (`{package}` provides `{module}`, which defines the model)"
    if package == "modelkit":
        return "`pip install modelkit` (the model is one of modelkit's own)"
    return (
        f"`pip install modelkit` and the package that provides `{module}` "
        "(its name was not recorded: the model's module was not installed as a package)"
    )


def _load_calls(arch: ArchFacts, target: UsageTarget) -> tuple[str, str, str, str]:
    """``(where, modelkit.load call, mixin from_pretrained call, verify command)`` for ``target``."""
    if target.kind == "local":
        return (
            f"the local registry `{target.registry}`",
            f'modelkit.load("{target.registry}", "{target.version}", repo="{target.repo_id}")',
            f'{arch.class_name}.from_pretrained("{target.repo_id}", revision="{target.version}", '
            f'cache_dir="{target.registry}", local_files_only=True)',
            f"modelkit verify {target.registry}@{target.version} --repo {target.repo_id}",
        )
    return (
        f"the Hugging Face Hub (`{target.repo_id}`)",
        f'modelkit.load("hf://{target.repo_id}", "{target.version}")',
        f'{arch.class_name}.from_pretrained("{target.repo_id}", revision="{target.version}")',
        f"modelkit verify hf://{target.repo_id}@{target.version}",
    )


def _plain_load_lines(arch: ArchFacts, target: UsageTarget) -> list[str]:
    """The loading snippet without modelkit (plain PyTorch or transformers), when it can be written."""
    ref = arch.reference
    if not ref.ref:
        return []
    plain = release_snippet(
        ref.ref,
        arch.kwargs,
        weights=arch.weights.snippet_facts(),
        repo_id=target.repo_id,
        revision=target.version,
        registry=target.registry if target.kind == "local" else None,
        configs=read_config_args(ref.configs, source="config.json") or None,
    )
    label = "Or with transformers' own loader:" if ref.transformers else "Or with plain PyTorch:"
    return ["", label, "", "```python", plain.rstrip(), "```"]


def usage_section(arch: ArchFacts, target: UsageTarget) -> str:
    """The "How to use" text: exactly what loads this release from ``target``."""
    where, call, mixin_call, check = _load_calls(arch, target)
    lines = [
        f"Load release `{target.version}` from {where}; needs {_install_needs(arch)}:",
        "",
        "```python",
        "import modelkit",
        "",
        f"model = {call}  # pinned to the release tag",
        "```",
        "",
        "`modelkit.load` rebuilds the model from the reference in `config.json` "
        f"(`{known(arch.reference.ref)}`), checks the weights' sha256 against `run.json` and "
        "`manifest.json`, and loads the safetensors weights (no pickle).",
        *_plain_load_lines(arch, target),
    ]
    if arch.mixin:
        lines += [
            "",
            f"`{arch.class_name}` is a `PyTorchModelHubMixin`, so its own loader works too:",
            "",
            "```python",
            f"from {arch.module} import {arch.class_name}",
            "",
            f"model = {mixin_call}.eval()",
            "```",
        ]
    lines += ["", f"Check it first (hashes, tag, signature, weights): `{check}`."]
    return "\n".join(lines)


def default_target(*, repo_id: str | None, version: str | None, project: Any) -> UsageTarget:
    """The snippet's target before a release: the project's hub, else placeholders."""
    return UsageTarget(
        kind="hub", repo_id=repo_id or PLACEHOLDER_REPO, version=version or PLACEHOLDER_VERSION
    )
