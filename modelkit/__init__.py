"""modelkit: a maintainer's toolkit for open-source PyTorch model repositories.

The library never prints; the CLI (``modelkit.cli``) renders what it returns.
Importing this package does not import torch.
"""

__version__ = "0.1.0"
