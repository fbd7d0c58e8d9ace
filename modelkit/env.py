"""Environment fingerprint (what a result depends on) and its diff."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

# fields whose difference means bitwise equality cannot be expected
MATTERS = (
    "torch",
    "device_type",
    "cuda",
    "cudnn",
    "threads",
    "deterministic",
    "cpu_capability",
)


def cpu_model() -> str:
    """The CPU model name (Linux /proc/cpuinfo, else platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: Any = None) -> dict[str, Any]:
    """Versions, device and threading facts, for the run record."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    cuda_ok = torch.cuda.is_available()
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "modelkit": _version("modelkit"),
        "cuda": torch.version.cuda if cuda_ok else None,
        "cudnn": torch.backends.cudnn.version() if cuda_ok else None,
        "device_type": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    if dev.type == "cuda":
        info["gpu_count"] = torch.cuda.device_count()
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        info["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return info


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        mod = sys.modules.get(dist)
        return getattr(mod, "__version__", None)


def diff_environments(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Fields that differ between two environments; ``matters`` marks those that break bitwise equality."""
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append({"field": key, "a": a.get(key), "b": b.get(key), "matters": key in MATTERS})
    return out
