"""Small 2-conv CNN image classifier for 3x28x28 inputs (e.g. cats vs dogs).

Source: the reference article's ``CNN`` (../shared/seeds, "猫狗分类"), with its bugs fixed
(the missing ``torch.nn.functional`` import, the undefined test loader).
conv5(3->32) -> ReLU -> maxpool2 -> conv5(32->64) -> ReLU -> maxpool2
-> fc(64*4*4 -> 1024) -> ReLU -> dropout 0.2 -> fc(1024 -> num_classes)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from modelkit.models.registry import register_model


class SmallCNN(nn.Module, PyTorchModelHubMixin, library_name="modelkit", tags=["small-cnn"]):
    """Two 5x5 convolutions, two max-pools, one hidden fully connected layer."""

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        image_size: int = 28,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 1024,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        side = ((image_size - 4) // 2 - 4) // 2  # 28 -> 24 -> 12 -> 8 -> 4
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 32, 12, 12)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, 4, 4)
        x = x.flatten(1)  # (B, 1024)
        x = self.dropout(F.relu(self.fc1(x)))  # (B, hidden)
        return self.fc2(x)  # (B, num_classes) logits


@register_model(
    "small-cnn",
    description="2-conv CNN for 3x28x28 images (the reference article's cats-vs-dogs model)",
    input_shape=(3, 28, 28),
    default_data="imagefolder:../shared/data/catsdogs",
    defaults={"batch_size": 32, "lr": 1e-3, "epochs": 20},
)
def small_cnn(**kwargs) -> SmallCNN:
    """Build the small CNN."""
    return SmallCNN(**kwargs)
