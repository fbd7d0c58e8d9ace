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
    task = "classification"  # the task this data is for (modelkit.tasks)

    def __post_init__(self) -> None:
        """Check shapes and labels now, before any training step (a label outside the classes
        otherwise surfaces as a crash an epoch later, a shape mismatch in the first batch)."""
        from modelkit.errors import DataError

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

    def model_outputs(
        self, model: torch.nn.Module, *, spec: str, record: dict[str, Any], device: Any
    ) -> int:
        """How many classes ``model`` outputs for one held-out sample -- or a DataError (exit 2)
        when the data does not fit the model: a sample shape other than the one the run was
        trained on (run.json ``data.input_shape``), or a shape the model rejects."""
        from modelkit.errors import DataError

        trained = list((record.get("data") or {}).get("input_shape") or self.input_shape)
        try:
            if list(self.input_shape) != trained:
                raise RuntimeError(f"samples are {self.input_shape}")
            with torch.no_grad():
                return int(model(self.x_test[:1].to(device)).shape[1])
        except (RuntimeError, ValueError, IndexError) as exc:  # a shape mismatch in the model
            raise DataError(
                f"data '{spec}' does not fit the model (trained on samples of shape "
                f"{tuple(trained)}): {(str(exc).splitlines() or [type(exc).__name__])[0]}",
                hint="evaluate on data shaped like the training data (see run.json data)",
            ) from None

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
