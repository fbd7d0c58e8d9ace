"""The in-memory classification dataset (images or features with class labels) and the
content fingerprint. Token windows for language models are :mod:`modelkit.data.text`; what
either is used for (loss, metrics, fit checks) belongs to its task (:mod:`modelkit.tasks`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from modelkit.errors import DataError


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
    task = "classification"  # the task this data is for (modelkit.tasks)

    def __post_init__(self) -> None:
        """Check shapes and labels now, before any training step (a label outside the classes
        otherwise surfaces as a crash an epoch later, a shape mismatch in the first batch)."""

        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise DataError(
                    f"data '{self.spec}': x_{split}/y_{split} must be tensors",
                    hint="return torch tensors from the loader",
                )
            if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
                raise DataError(
                    f"data '{self.spec}': {split} split has inputs {tuple(x.shape)} and labels "
                    f"{tuple(y.shape)}; expected (N, ...) and (N,)",
                    hint="one label per sample",
                )
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise DataError(
                    f"data '{self.spec}': {split} labels are {y.dtype}, expected integers",
                    hint="labels are class indices (torch.int64)",
                )
            if y.dtype != torch.int64:  # torch's losses take int64 class indices only
                raise DataError(
                    f"data '{self.spec}': {split} labels are {y.dtype}, expected torch.int64",
                    hint="return the labels as int64 class indices: y.long()",
                )
            if len(x) == 0:
                raise DataError(
                    f"data '{self.spec}': the {split} split is empty",
                    hint="return at least one sample in each split (train and test)",
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
                raise DataError(
                    f"data '{self.spec}': {split} label {bad} is outside the "
                    f"{len(self.classes)} classes 0..{len(self.classes) - 1}",
                    hint="fix the labels, or list every class in `classes`",
                )
        if tuple(self.x_test.shape[1:]) != tuple(self.x_train.shape[1:]):
            raise DataError(
                f"data '{self.spec}': held-out samples are {tuple(self.x_test.shape[1:])}, "
                f"training samples {tuple(self.x_train.shape[1:])}",
                hint="both splits need the same sample shape",
            )

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
