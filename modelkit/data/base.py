"""The in-memory dataset every loader returns, and its content fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Dataset:
    """Train and held-out tensors (float32 images in [0, 1], int64 labels) plus provenance."""

    spec: str
    x_train: torch.Tensor  # (N, C, H, W) float32
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, C, H, W) float32
    y_test: torch.Tensor  # (M,) int64
    classes: list[str]
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (1, 28, 28)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of label classes."""
        return len(self.classes)

    def model_hints(self) -> dict[str, Any]:
        """Values a model factory may take from the data."""
        c, h, _w = self.input_shape
        return {"num_classes": self.num_classes, "in_channels": c, "image_size": h}

    def summary(self) -> dict[str, Any]:
        """What the run record stores about the data."""
        return {
            "spec": self.spec,
            "fingerprint": self.fingerprint,
            "train_size": int(self.x_train.shape[0]),
            "test_size": int(self.x_test.shape[0]),
            "input_shape": list(self.input_shape),
            "classes": list(self.classes),
            **self.info,
        }

    def to(self, device: torch.device | str) -> Dataset:
        """Move every tensor to ``device`` (data lives on the training device)."""
        for name in ("x_train", "y_train", "x_test", "y_test"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def fingerprint_tensors(*tensors: torch.Tensor, extra: str = "") -> str:
    """sha256 over shapes, dtypes and bytes of ``tensors`` in order (canonical content hash)."""
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return "sha256:" + h.hexdigest()
