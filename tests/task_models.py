"""A model for the eval-transform test: it normalises its inputs in its training step (as a
Lightning module may), not in ``forward``; importable as ``task_models:NormalisingNet``."""

import torch
from torch import nn


class NormalisingNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(784, num_classes)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.2) / 0.05  # the module's own input normalisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """The same normalisation as an importable function."""
    return (x - 0.2) / 0.05
