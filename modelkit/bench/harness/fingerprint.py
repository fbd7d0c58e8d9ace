"""The machine a measurement depends on: CPU model, cores and flags, GPU, driver and clocks,
CUDA, torch, Python, valgrind."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from typing import Any


def cpu_model() -> str:
    """The CPU model name (Linux /proc/cpuinfo, else platform.processor()).

    The same as ``modelkit.env.cpu_model``, kept here on purpose: the harness is loaded into
    REF's processes too, where ``modelkit`` is REF's (an older one may lack the function), so
    the harness imports nothing from modelkit."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags_digest() -> str | None:
    """A short digest of the CPU's feature flags (AVX-512 or not changes the code paths)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                    return hashlib.sha256(flags.encode()).hexdigest()[:16]
    except OSError:
        pass
    return None


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


NVSMI_FIELDS = (
    "name",
    "driver_version",
    "clocks.sm",
    "clocks.mem",
    "clocks.max.sm",
    "clocks.max.mem",
    "clocks.applications.graphics",
    "persistence_mode",
)


def _nvidia_smi() -> dict[str, str | None]:
    """GPU model, driver and clocks (current, maximum, application) from ``nvidia-smi``."""
    empty: dict[str, str | None] = {"gpu": None, "driver": None, "gpu_clocks": None}
    exe = shutil.which("nvidia-smi")
    if not exe:
        return empty
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(NVSMI_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return empty
    first = [c.strip() for c in (out.splitlines() or [""])[0].split(",")]
    first += [""] * (len(NVSMI_FIELDS) - len(first))
    name, driver, sm, mem, max_sm, max_mem, app, persist = first[: len(NVSMI_FIELDS)]
    clocks = (
        f"sm {sm} MHz (max {max_sm}, application {app}), mem {mem} MHz (max {max_mem}), "
        f"persistence {persist}"
    )
    return {"gpu": name or None, "driver": driver or None, "gpu_clocks": clocks if sm else None}


@dataclass(frozen=True)
class Fingerprint:
    """The machine a measurement depends on, as written into a results file's
    ``machine_info["modelkit"]`` and ``modelkit.fingerprint`` (and read back by the gate)."""

    cpu_model: str | None = None
    cpu_count: int | None = None
    system: str | None = None
    machine: str | None = None
    python: str | None = None
    torch: str | None = None
    device: str | None = None
    cpu_flags: str | None = None
    gpu: str | None = None
    driver: str | None = None
    gpu_clocks: str | None = None
    cuda: str | None = None
    valgrind: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (every field, None included)."""
        return asdict(self)


def machine_fingerprint(device: str = "cpu") -> Fingerprint:
    """CPU model and cores, GPU model, driver and clocks, CUDA, torch, python, valgrind: what a
    measurement depends on."""
    info = Fingerprint(
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count(),
        system=platform.system(),
        machine=platform.machine(),
        python=platform.python_version(),
        torch=_dist_version("torch"),
        device=device.split(":")[0],
        cpu_flags=_cpu_flags_digest(),
        **_nvidia_smi(),
        valgrind=_valgrind_version(),
    )
    if device.startswith("cuda") or "torch" in sys.modules:
        import torch

        info = replace(info, cuda=torch.version.cuda)
        if device.startswith("cuda") and torch.cuda.is_available():
            info = replace(info, gpu=torch.cuda.get_device_name(torch.device(device)))
    return info


FINGERPRINT_KEYS = (
    "cpu_model", "cpu_count", "gpu", "driver", "cuda", "torch", "python", "device"
)  # fmt: skip


def _valgrind_version() -> str | None:
    exe = shutil.which("valgrind")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
