"""The GPU path: mixed precision, channels_last, torch.compile, TF32 policy, data placement.

Each piece is a small function the loop calls; all choices are recorded in the run.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from modelkit.errors import BadInputError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast for bf16/fp16; a no-op context for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (gradients underflow otherwise); None for bf16/fp32."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse combinations that cannot run."""
    if precision not in PRECISIONS:
        raise BadInputError(
            f"unknown precision '{precision}' (valid: {', '.join(PRECISIONS)})",
            hint="use --precision fp32",
        )
    if precision == "fp16" and device.type == "cpu":
        raise BadInputError(
            "--precision fp16 needs a CUDA device",
            hint="use --precision bf16 on CPU, or --device cuda",
        )


def set_tf32(enabled: bool) -> dict[str, bool]:
    """Set the TF32 policy explicitly (matmul and cuDNN) and return it for the record."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return {"tf32_matmul": enabled, "tf32_cudnn": enabled}


def uses_convolutions(model: torch.nn.Module) -> bool:
    """True when the model has 2-D convolutions (channels_last helps them on GPU)."""
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def memory_format(model: torch.nn.Module, device: torch.device) -> torch.memory_format:
    """channels_last for conv nets on CUDA, contiguous otherwise."""
    if device.type == "cuda" and uses_convolutions(model):
        return torch.channels_last
    return torch.contiguous_format


def fits_on_device(nbytes: int, device: torch.device, *, fraction: float = 0.5) -> bool:
    """Whether ``nbytes`` of data may live on ``device`` (CPU: always)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= fraction * free


def place_data(data: Any, device: torch.device) -> tuple[Any, bool]:
    """Move the dataset to the device when it fits; else pin it in host memory.

    Returns ``(data, on_device)``; when not on the device, batches are copied with
    ``non_blocking=True`` from pinned memory by :func:`to_device`.
    """
    nbytes = sum(
        t.numel() * t.element_size() for t in (data.x_train, data.y_train, data.x_test, data.y_test)
    )
    if fits_on_device(nbytes, device):
        return data.to(device), True
    for name in ("x_train", "y_train", "x_test", "y_test"):
        setattr(data, name, getattr(data, name).pin_memory())
    return data, False


def to_device(t: torch.Tensor, device: torch.device, mf: torch.memory_format) -> torch.Tensor:
    """Copy a batch to the device (non-blocking from pinned memory) in the given memory format."""
    t = t.to(device, non_blocking=True)
    return t.contiguous(memory_format=mf) if t.ndim == 4 else t
