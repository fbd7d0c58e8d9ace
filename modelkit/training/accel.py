"""The GPU path: mixed precision, channels_last, torch.compile, TF32 policy, data placement.

Each piece is a small function the training loop calls; every choice ends up in
``run.json["accel"]`` (see :func:`accel_record`). Nothing here prints.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from modelkit.errors import BadInputError

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
PLACEMENTS = ("auto", "device", "host")


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse precisions that cannot run on ``device`` (fp16 needs CUDA)."""
    if precision not in AUTOCAST_DTYPES:
        raise BadInputError(
            f"unknown precision '{precision}' (valid: {', '.join(AUTOCAST_DTYPES)})",
            hint="use --precision fp32",
        )
    if precision == "fp16" and device.type != "cuda":
        raise BadInputError(
            "--precision fp16 needs a CUDA device (its grad scaler is a GPU tool)",
            hint="use --precision bf16 on CPU, or --device cuda",
        )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast to bf16/fp16 on ``device``; a no-op context for fp32."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled for fp16 only (small gradients underflow otherwise).

    Disabled (bf16/fp32), ``scale`` returns the loss, ``step`` is ``optimizer.step()``,
    ``unscale_``/``update`` do nothing: the step has no precision branches (nanoGPT style).
    """
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def set_tf32(enabled: bool) -> dict[str, Any]:
    """Set the TF32 policy explicitly (matmul and cuDNN) and return it for the record.

    PyTorch's own defaults differ between matmul (off) and cuDNN (on); modelkit sets both
    to the config's ``tf32`` so an fp32 run is fp32 unless TF32 was asked for.
    """
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return {
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def uses_convolutions(model: torch.nn.Module) -> bool:
    """True when the model has 2-D convolutions (channels_last speeds them up on GPU)."""
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def memory_format(
    model: torch.nn.Module, device: torch.device, *, enabled: bool
) -> torch.memory_format:
    """channels_last for conv nets on CUDA when ``enabled``; contiguous otherwise."""
    if enabled and device.type == "cuda" and uses_convolutions(model):
        return torch.channels_last
    return torch.contiguous_format


def data_nbytes(data: Any) -> int:
    """Bytes of a dataset's four tensors."""
    tensors = (data.x_train, data.y_train, data.x_test, data.y_test)
    return sum(t.numel() * t.element_size() for t in tensors)


def choose_placement(
    nbytes: int, device: torch.device, *, requested: str = "auto", fraction: float = 0.5
) -> str:
    """``device`` (all data on the training device) or ``host`` (pinned batches, CUDA only).

    ``auto`` keeps data on a CUDA device when it takes at most ``fraction`` of its free memory.
    """
    if requested not in PLACEMENTS:
        raise BadInputError(
            f"unknown data placement '{requested}' (valid: {', '.join(PLACEMENTS)})",
            hint="use --data-placement auto",
        )
    if device.type != "cuda":
        if requested == "host":
            raise BadInputError(
                "--data-placement host (pinned memory) needs a CUDA device",
                hint="on CPU the data is already in host memory: use auto",
            )
        return "device"
    if requested != "auto":
        return requested
    free, _total = torch.cuda.mem_get_info(device)
    return "device" if nbytes <= fraction * free else "host"


class PinnedBatcher:
    """Batches gathered on the host into pinned buffers and copied with ``non_blocking=True``.

    For data that does not fit on the device. Gathering (``index_select`` into a pinned
    staging buffer) runs on the CPU while the GPU works on the previous step; the copy goes
    on a side stream, the compute stream waits for it. ``slots`` buffers rotate; a buffer is
    reused only after its previous copy finished (its event), so no copy reads a buffer that
    is being refilled.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        device: torch.device,
        batch_size: int,
        mf: torch.memory_format = torch.contiguous_format,
        slots: int = 2,
    ) -> None:
        self.x, self.y, self.device, self.mf = x.contiguous(), y.contiguous(), device, mf
        shape = (batch_size, *x.shape[1:])
        self.buffers = [
            (
                torch.empty(shape, dtype=x.dtype, pin_memory=True),
                torch.empty((batch_size,), dtype=y.dtype, pin_memory=True),
            )
            for _ in range(slots)
        ]
        self.events: list[Any] = [None] * slots
        self.stream = torch.cuda.Stream(device)
        self.turn = 0

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch ``x[idx], y[idx]`` on the device (``idx`` on the CPU)."""
        k = self.turn % len(self.buffers)
        self.turn += 1
        if self.events[k] is not None:
            self.events[k].synchronize()  # the last copy out of this buffer has finished
        n = len(idx)
        xh, yh = self.buffers[k][0][:n], self.buffers[k][1][:n]
        torch.index_select(self.x, 0, idx, out=xh)
        torch.index_select(self.y, 0, idx, out=yh)
        compute = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(compute)
        with torch.cuda.stream(self.stream):
            xb = xh.to(self.device, non_blocking=True)
            yb = yh.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.events[k] = event
        compute.wait_stream(self.stream)
        xb.record_stream(compute)  # the caching allocator must not reuse them early
        yb.record_stream(compute)
        if xb.ndim == 4 and self.mf is not torch.contiguous_format:
            xb = xb.contiguous(memory_format=self.mf)
        return xb, yb


def to_device(t: torch.Tensor, device: torch.device, mf: torch.memory_format) -> torch.Tensor:
    """Copy a batch to ``device`` (non-blocking) in the memory format ``mf`` (4-D tensors)."""
    t = t.to(device, non_blocking=True)
    return t.contiguous(memory_format=mf) if t.ndim == 4 else t


def maybe_compile(module: torch.nn.Module, *, enabled: bool) -> torch.nn.Module:
    """``torch.compile(module)`` when enabled (the original module keeps the weights)."""
    if not enabled:
        return module
    try:
        return torch.compile(module)  # type: ignore[return-value]
    except RuntimeError as exc:  # e.g. an unsupported Python version
        raise BadInputError(
            f"torch.compile is not available here: {str(exc).splitlines()[0]}",
            hint="train without --compile",
        ) from None


def accel_record(
    *,
    precision: str,
    device: torch.device,
    scaler: Any,
    tf32: dict[str, Any],
    compiled: bool,
    mf: torch.memory_format,
    placement: str,
) -> dict[str, Any]:
    """What ``run.json["accel"]`` says about the speed choices of a run."""
    dtype = AUTOCAST_DTYPES[precision]
    return {
        "precision": precision,
        "autocast": None if dtype is None else {"device_type": device.type, "dtype": str(dtype)},
        "grad_scaler": scaler.is_enabled(),
        **tf32,
        "compile": compiled,
        "channels_last": mf is torch.channels_last,
        "data_placement": placement,
        "pinned_memory": placement == "host",
        "non_blocking_copies": placement == "host",
    }
