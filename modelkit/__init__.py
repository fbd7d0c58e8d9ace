"""modelkit: a maintainer's toolkit for open-source PyTorch model repositories.

The library never prints; the CLI (``modelkit.cli``) renders what it returns.
Importing this package does not import torch.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# the public run API, imported on first use so `import modelkit` does not import torch
_LAZY = {
    "start_run": "modelkit.tracking",
    "seed_everything": "modelkit.tracking",
    "Run": "modelkit.tracking",
    "RUN_DIR_ENV": "modelkit.tracking",
    "RunRecord": "modelkit.runs",
    "verified_weights": "modelkit.weights",
    "load": "modelkit.loading",
}
__all__ = [
    "RUN_DIR_ENV",
    "Run",
    "RunRecord",
    "__version__",
    "load",
    "seed_everything",
    "start_run",
    "verified_weights",
]

if TYPE_CHECKING:  # pragma: no cover
    from modelkit.loading import load
    from modelkit.runs import RunRecord
    from modelkit.tracking import RUN_DIR_ENV, Run, seed_everything, start_run
    from modelkit.weights import verified_weights


def __getattr__(name: str) -> Any:
    """Import the public API lazily (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
