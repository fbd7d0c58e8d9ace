"""``modelkit.load``: rebuild a trained model from a run, a release, a local registry or the Hub.

::

    import modelkit

    model = modelkit.load("runs/mnist")                                   # a run directory
    model = modelkit.load("/srv/registry", "v1.2", repo="my-org/mnist")   # a local registry
    model = modelkit.load("hf://my-org/mnist", "v1.2")                    # the Hugging Face Hub

The model is rebuilt through the importable reference in ``config.json``
(``modelkit.reference``: ``module:attr`` + kwargs), so it loads wherever the package that
defines the model is installed, not only inside the repository that trained it. Plain
``nn.Module`` models work; ``PyTorchModelHubMixin`` models also keep their own
``from_pretrained``. Either weights layout loads (``model.safetensors``, or shards + index):
every file's sha256 is checked against the run record (and the release manifest) that came
with it, then the model is built on ``meta`` and loaded shard by shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError

__all__ = ["load", "resolve_directory"]


def load(
    target: str | Path,
    revision: str | None = None,
    *,
    repo: str | None = None,
    device: str = "cpu",
    project: Any = None,
) -> Any:
    """Load the model at ``target`` (run dir, release dir, local registry or ``hf://ORG/NAME``).

    ``revision`` is a release tag (``v1.2``), a branch or a commit (default: ``main``) for a
    registry or the Hub; ``repo`` picks ``ORG/NAME`` in a local registry holding several.
    Returns the ``torch.nn.Module`` in eval mode on ``device``.
    """
    from modelkit.models.weights import load_model_from_dir

    directory = resolve_directory(target, revision, repo=repo)
    model, _ = load_model_from_dir(directory, project=project, device=device)
    return model


def resolve_directory(
    target: str | Path, revision: str | None = None, *, repo: str | None = None
) -> Path:
    """The local directory holding ``config.json`` + the weights for ``target``."""
    spec = str(target)
    if spec.startswith("hf://"):
        return _from_hub(spec[len("hf://") :].strip("/"), revision)
    if "://" in spec:
        raise BadInputError(
            f"unknown target '{spec}'",
            hint="pass a run or release directory, a local registry folder, or hf://ORG/NAME",
        )
    path = Path(spec).expanduser()
    if (path / "config.json").is_file():
        if revision is not None:
            raise BadInputError(
                f"{path} is a single run or release directory; it has no revisions",
                hint="drop the revision, or pass the registry folder that holds the release",
            )
        return path
    return _from_registry(path, revision, repo=repo)


def _from_registry(root: Path, revision: str | None, *, repo: str | None) -> Path:
    from modelkit.release.local import LocalRegistry
    from modelkit.release.targets import check_repo_id

    if root.name.startswith("models--") and root.is_dir():  # the repo folder itself
        _, org, name = root.name.split("--", 2)
        root, repo = root.parent, repo or f"{org}/{name}"
    if not root.is_dir():
        raise BadInputError(
            f"{root} not found",
            hint="pass a run directory, a local registry folder, or hf://ORG/NAME",
        )
    repo = repo or LocalRegistry.only_repo(root)
    if repo is None:
        raise BadInputError(
            f"{root} is neither a run directory (no config.json) nor a registry holding one repo",
            hint="pass repo='ORG/NAME' for a registry holding several",
        )
    registry = LocalRegistry(root, check_repo_id(repo))
    snapshot = registry.snapshot(revision or "main")
    if snapshot is None:
        state = registry.state()
        raise BadInputError(
            f"{registry.describe()} has no revision '{revision or 'main'}'",
            hint="released versions: " + (", ".join(sorted(state.tags)) or "none"),
        )
    return snapshot


def _from_hub(repo_id: str, revision: str | None) -> Path:
    import os

    from huggingface_hub import snapshot_download

    from modelkit.release.targets import check_repo_id

    check_repo_id(repo_id)
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                endpoint=os.environ.get("HF_ENDPOINT") or None,
            )
        )
    except Exception as exc:
        raise BadInputError(
            f"cannot download hf://{repo_id}@{revision or 'main'}: {type(exc).__name__}",
            hint="check the repo id and the revision (and `hf auth login` for a private repo)",
        ) from None
