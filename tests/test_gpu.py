"""The GPU path: mixed precision, TF32 policy, channels_last, torch.compile, pinned host
batches, NCCL DDP. Marked ``gpu``: skipped without CUDA (and NCCL DDP without 2 GPUs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelkit.runs import RunDir

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BASE = ["--epochs", "1", "--batch-size", "128", "-q", "--device", "cuda", "--deterministic"]


def modelkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )


def train(tmp_path: Path, name: str, *args: str) -> dict:
    p = modelkit("train", *BASE, *args, "--out", name, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    return RunDir(tmp_path / name).read_record()


@pytest.mark.parametrize(
    ("precision", "scaler"), [("fp32", False), ("bf16", False), ("fp16", True)]
)
def test_precision_trains_and_is_recorded(tmp_path: Path, precision: str, scaler: bool) -> None:
    rec = train(tmp_path, precision, "--precision", precision)
    accel = rec["accel"]
    assert accel["precision"] == precision and accel["grad_scaler"] is scaler
    assert accel["tf32_matmul"] is False and accel["tf32_cudnn"] is False  # explicit policy
    assert accel["data_placement"] == "device"
    assert rec["env"]["device_type"] == "cuda"
    assert rec["metrics"]["test_accuracy"] > 0.5


def test_tf32_is_recorded(tmp_path: Path) -> None:
    rec = train(tmp_path, "tf32", "--tf32")
    assert rec["accel"]["tf32_matmul"] is True and rec["accel"]["tf32_cudnn"] is True
    assert rec["env"]["tf32_matmul"] is True


def test_channels_last_for_the_cnn(tmp_path: Path) -> None:
    rec = train(tmp_path, "cnn", "-m", "small-cnn", "-d", "digits", "--precision", "bf16")
    assert rec["accel"]["channels_last"] is True
    off = train(tmp_path, "cnn-off", "-m", "small-cnn", "-d", "digits", "--no-channels-last")
    assert off["accel"]["channels_last"] is False
    mlp = train(tmp_path, "mlp")
    assert mlp["accel"]["channels_last"] is False  # no convolutions: nothing to reorder


def test_pinned_host_batches_equal_device_data_bitwise(tmp_path: Path) -> None:
    """Data that does not fit: pinned staging buffers + non-blocking copies, same result."""
    dev = train(tmp_path, "dev", "--data-placement", "device")
    host = train(tmp_path, "host", "--data-placement", "host")
    assert host["accel"]["data_placement"] == "host" and host["accel"]["pinned_memory"] is True
    assert host["accel"]["non_blocking_copies"] is True
    assert host["weights_sha256"] == dev["weights_sha256"]


def test_compile_trains(tmp_path: Path) -> None:
    rec = train(tmp_path, "compiled", "--compile", "--no-deterministic")
    assert rec["accel"]["compile"] is True and rec["metrics"]["test_accuracy"] > 0.5


def test_resume_on_gpu_is_bitwise(tmp_path: Path) -> None:
    full = train(tmp_path, "full", "--epochs", "2", "--precision", "fp16")
    part = RunDir(tmp_path / "part")
    p = modelkit(
        "train", *BASE, "--epochs", "2", "--precision", "fp16", "--out", "part", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    # drop the final weights and the last checkpoint: resume from the end of epoch 1
    part.weights.unlink()
    ckpts = sorted(part.checkpoints.iterdir())
    ckpts[-1].unlink()
    p = modelkit("train", "--resume", "part", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert part.read_record()["weights_sha256"] == full["weights_sha256"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpu_nccl_ddp_is_bitwise_reproducible(tmp_path: Path) -> None:
    a = train(tmp_path, "a", "--nproc-per-node", "2", "--precision", "bf16")
    b = train(tmp_path, "b", "--nproc-per-node", "2", "--precision", "bf16")
    assert a["distributed"] == {"world_size": 2, "backend": "nccl"}
    assert a["weights_sha256"] == b["weights_sha256"]


def test_more_processes_than_gpus_is_refused(tmp_path: Path) -> None:
    n = torch.cuda.device_count() + 1
    p = modelkit("train", *BASE, "--nproc-per-node", str(n), "--out", "x", cwd=tmp_path)
    assert p.returncode == 2 and "more GPUs than this node has" in p.stderr, p.stderr
    assert not (tmp_path / "x").exists()
