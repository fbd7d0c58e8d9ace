"""Release targets: parse ``hf://ORG/NAME`` or a local registry path; the common interface."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError
from modelkit.release.hub import HubTarget
from modelkit.release.local import LocalRegistry
from modelkit.release.remote import RemoteFile, RemoteState, Target

__all__ = ["RemoteFile", "RemoteState", "Target", "check_repo_id", "parse_target", "split_ref"]

REPO_ID_RE = re.compile(
    r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,94}[A-Za-z0-9_]?/[A-Za-z0-9][\w.-]{0,94}$"
)
DEFAULT_REGISTRY = "registry"


def check_repo_id(repo_id: str) -> str:
    """Validate ``ORG/NAME`` the way the Hub does (letters, digits, - _ .; no -- or ..)."""
    name = repo_id.split("/")[-1] if isinstance(repo_id, str) else ""
    if (
        not isinstance(repo_id, str)
        or not REPO_ID_RE.match(repo_id)
        or name.endswith((".", "-"))
        or name.endswith(".git")
    ):
        raise BadInputError(
            f"invalid repo id '{repo_id}': expected ORG/NAME with letters, digits, '-', '_', '.' "
            "(no '--' or '..', at most 96 characters each)",
            hint="for example: hf://my-org/mnist-mlp",
        )
    return repo_id


def repo_name(model: str) -> str:
    """A repo name for a model name or reference: ``mnist_adopted:Net`` -> ``mnist_adopted-net``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.replace(":", "-")).lower()
    name = re.sub(r"([-.])[-.]+", r"\1", name).strip("-._")
    return name[:96].rstrip("-.") or "model"


def parse_target(
    spec: str | None,
    *,
    project: Any = None,
    repo_id: str | None = None,
    model: str | None = None,
    endpoint: str | None = None,
    token_required: bool = True,
    retry: Any = None,
) -> Target:
    """``hf://ORG/NAME`` -> Hub; anything else is a local registry folder (default ./registry)."""
    hub_default = getattr(project, "hub", None)
    spec = spec or hub_default
    if spec and spec.startswith("hf://"):
        return HubTarget(
            check_repo_id(spec[len("hf://") :].strip("/")),
            endpoint=endpoint,
            token_required=token_required,
            retry=retry,
        )
    if spec and "://" in spec:
        raise BadInputError(
            f"unknown target '{spec}'", hint="use hf://ORG/NAME for the Hub or a folder path"
        )
    root = Path(spec) if spec else (getattr(project, "root", None) or Path.cwd()) / DEFAULT_REGISTRY
    if repo_id is None and hub_default and hub_default.startswith("hf://"):
        repo_id = hub_default[len("hf://") :].strip("/")
    if repo_id is None:
        repo_id = LocalRegistry.only_repo(root) or (f"local/{repo_name(model)}" if model else None)
    if repo_id is None:
        raise BadInputError(
            f"which repo in {root}? it holds none or several", hint="pass --repo ORG/NAME"
        )
    return LocalRegistry(root, check_repo_id(repo_id))


def split_ref(spec: str) -> tuple[str, str]:
    """``TARGET@VERSION`` -> (TARGET, VERSION)."""
    target, sep, version = spec.rpartition("@")
    if not sep or not target or not version:
        raise BadInputError(
            f"expected TARGET@VERSION, got '{spec}'",
            hint="for example: modelkit verify hf://my-org/my-model@v1.2 or registry@v1.2",
        )
    return target, version
