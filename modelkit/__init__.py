"""modelkit: a maintainer's toolkit for open-source PyTorch model repositories.

The library never prints; the CLI (``modelkit.cli``) renders what it returns.
Importing this package does not import torch.
"""

__version__ = "0.1.0"

# public API, imported on first use (so `import modelkit` stays free of torch)
_LAZY = {
    "load": "modelkit.loading",
}


def __getattr__(name: str):  # PEP 562
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modelkit' has no attribute {name!r}")
