"""Evaluation data from a user's loader: any torch ``Dataset`` or ``DataLoader`` (or iterable)
yielding ``(inputs, targets)``, streamed in batches and fingerprinted as it is read."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from modelkit.errors import DataError


class BatchSource:
    """Batches of ``(inputs, targets)`` from a loader; ``fingerprint`` after a full pass."""

    task = None  # unknown: the run's task decides
    tokenizer = None
    classes: list[str] | None = None  # the run's class names, when it records them
    normalize: dict[str, list[float]] | None = None  # the run's per-channel (x - mean) / std

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes else None

    def __init__(self, spec: str, source: Any, *, batch_size: int) -> None:
        self.spec = spec
        self.source = source
        self.batch_size = batch_size
        self._hash = hashlib.sha256(b"batches-v1|")
        self.fingerprint = ""

    def batches(self) -> Iterator[tuple[Any, Any]]:
        """``(inputs, targets)`` tensors, hashed as they pass (``fingerprint`` at the end)."""
        import torch

        loader = self.source
        if isinstance(loader, torch.utils.data.Dataset) and hasattr(loader, "__getitem__"):
            loader = torch.utils.data.DataLoader(loader, batch_size=self.batch_size)
        for i, item in enumerate(loader):
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise DataError(
                    f"data '{self.spec}': batch {i} is {type(item).__name__}, "
                    "not (inputs, targets)",
                    hint="yield (inputs, targets) pairs of tensors",
                )
            x, y = item[0], item[1]
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise DataError(
                    f"data '{self.spec}': batch {i} holds {type(x).__name__} and "
                    f"{type(y).__name__}, not tensors",
                    hint="yield torch tensors",
                )
            for t in (x, y):
                t = t.detach().cpu().contiguous()
                self._hash.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
                self._hash.update(t.numpy().tobytes())
            yield self._normalized(x), y
        self.fingerprint = "sha256:" + self._hash.hexdigest()

    def _normalized(self, x: Any) -> Any:
        """Images ``(N, C, H, W)`` normalised as the run's training data was."""
        if not self.normalize or x.ndim != 4 or not x.is_floating_point():
            return x
        import torch

        mean = torch.tensor(self.normalize["mean"], dtype=x.dtype, device=x.device)
        std = torch.tensor(self.normalize["std"], dtype=x.dtype, device=x.device)
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def is_batch_source(obj: Any) -> bool:
    """True for a torch Dataset/DataLoader or another iterable a loader may return."""
    import torch

    return isinstance(obj, (torch.utils.data.Dataset, torch.utils.data.DataLoader)) or (
        hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes, dict))
    )
