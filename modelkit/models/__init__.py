"""Models: the registry, the reference models, and weights I/O."""

from modelkit.models.registry import (
    ModelEntry,
    build_model,
    list_models,
    register_model,
    resolve_model,
)

__all__ = ["ModelEntry", "build_model", "list_models", "register_model", "resolve_model"]
