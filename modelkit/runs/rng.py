"""Determinism mode and RNG state capture (imports torch; :mod:`modelkit.runs.seeding` does not).

``configure_determinism`` seeds every generator, fixes the thread count (CPU reduction
order depends on it, pytorch#88718) and switches torch to deterministic algorithms; it
returns the block recorded as ``run.json["determinism"]``. ``capture_rng`` /
``restore_rng`` turn every RNG state (Python, NumPy, torch CPU, each CUDA device) into
uint8/int64 tensors plus JSON, so a checkpoint can hold them without pickle.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

CUBLAS_WORKSPACE = ":4096:8"
DATA_ORDER = "torch.randperm(n, generator=Generator().manual_seed(seed * 1000003 + epoch))"


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def determinism_state(*, enabled: bool, seed: int | None) -> dict[str, Any]:
    """The threads, algorithm and cuDNN/cuBLAS settings in force now (run.json's block)."""
    return {
        "enabled": enabled,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def configure_determinism(*, seed: int | None, threads: int, deterministic: bool) -> dict[str, Any]:
    """Seed everything, fix threads and (if ``deterministic``) the algorithms; returns the record.

    ``seed=None`` seeds nothing (a script that seeds on its own); ``seeded`` is then empty.
    """
    if deterministic:
        # must be set before the first cuBLAS handle exists; harmless on CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        _use_deterministic_algorithms()
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    if threads or deterministic:
        # a fixed, explicit thread count: the default one depends on the machine
        torch.set_num_threads(threads or torch.get_num_threads())
    if seed is not None:
        seed_all(seed)
    return {
        **determinism_state(enabled=deterministic, seed=seed),
        "data_order": DATA_ORDER,
        "seeded": []
        if seed is None
        else ["python", "numpy", "torch_cpu"]
        + (["torch_cuda_all"] if torch.cuda.is_available() else []),
    }


def _use_deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True)`` without its 4 s import of torch._inductor.

    The public call imports ``torch._inductor.config`` only to set ``deterministic`` there;
    modelkit never compiles, so the inductor flag is set only when inductor is already loaded.
    """
    import sys

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # pragma: no cover - a torch without the private setter
        torch.use_deterministic_algorithms(True)
        return
    setter(True, warn_only=False)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True


def epoch_permutation(n: int, *, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """Data order for one epoch: a function of (seed, epoch) only, never of workers or threads."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def capture_rng(
    cuda_devices: list[int] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG state as tensors (``rng.*``) plus the JSON-able rest.

    ``cuda_devices`` limits the CUDA states to those devices (a DDP rank owns one GPU and must
    not create a context on the others); None = every visible device.
    """
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {
        "rng.python": torch.tensor(py_state, dtype=torch.int64),
        "rng.numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.uint32).view(np.uint8).copy()),
        "rng.torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        if cuda_devices is None:
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = state
        else:
            for i in cuda_devices:
                tensors[f"rng.cuda.{i}"] = torch.cuda.get_rng_state(i)
    meta = {
        "python": {"version": py_version, "gauss_next": py_gauss},
        "numpy": {"name": np_name, "pos": int(np_pos), "has_gauss": int(np_has_gauss)},
        "numpy_gauss": float(np_gauss),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only for devices that exist)."""
    py = meta["python"]
    random.setstate((py["version"], tuple(int(v) for v in tensors["rng.python"]), py["gauss_next"]))
    keys = tensors["rng.numpy"].numpy().view(np.uint32)
    npm = meta["numpy"]
    np.random.set_state(
        (npm["name"], keys, npm["pos"], npm["has_gauss"], float(meta["numpy_gauss"]))
    )
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        for key, state in tensors.items():
            if key.startswith("rng.cuda.") and int(key[9:]) < torch.cuda.device_count():
                torch.cuda.set_rng_state(state, device=int(key[9:]))
