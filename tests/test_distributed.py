"""Multi-process training through torchrun: 2-process gloo DDP on CPU, bitwise across two runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from modelkit.runs import RunDir

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")

ARGS = ["--epochs", "2", "--batch-size", "128", "--quiet", "--device", "cpu", "--deterministic"]


def modelkit(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelkit", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_two_process_gloo_ddp_is_bitwise_reproducible(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        p = modelkit("train", *ARGS, "--nproc-per-node", "2", "--out", name, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        runs.append(RunDir(tmp_path / name).read_record())
    a, b = runs
    assert a["distributed"] == {"world_size": 2, "backend": "gloo"} == b["distributed"]
    assert a["status"] == "complete" and a["metrics"]["test_accuracy"] > 0.5
    assert a["weights_sha256"] == b["weights_sha256"]
    # the same global batches as a single process: close, but not claimed equal
    p = modelkit("train", *ARGS, "--out", "single", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    single = RunDir(tmp_path / "single").read_record()
    assert single["distributed"] == {"world_size": 1, "backend": None}
    assert abs(single["metrics"]["test_accuracy"] - a["metrics"]["test_accuracy"]) < 0.05
    # only rank 0 wrote: one set of files, metrics rows not duplicated
    rows = RunDir(tmp_path / "a").read_metrics()
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]


def test_more_processes_than_cores_is_refused(tmp_path: Path) -> None:
    n = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) + 1
    p = modelkit("train", *ARGS, "--nproc-per-node", str(n), "--out", "x", cwd=tmp_path)
    assert p.returncode == 2 and "CPU cores available" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x").exists()


def test_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = modelkit("train", *ARGS, "--nproc-per-node", "2", "--master-port", str(port), "--out", "x",
                     cwd=tmp_path)
    assert p.returncode == 2 and f"port {port}" in p.stderr and "already in use" in p.stderr


FAILING_RANK = '''
import os
import torch
from torch import nn

class FailsOnRank1(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(784, num_classes)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
    def forward(self, x):
        if self.training:
            self.calls += 1
            if os.environ.get("RANK") == "1" and int(self.calls) > 15:
                raise RuntimeError("rank 1 lost its GPU (simulated)")
        return self.fc(x.flatten(1))

def build(num_classes: int = 10):
    return FailsOnRank1(num_classes)
'''


def test_failing_rank_stops_all_and_keeps_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(FAILING_RANK)
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # digits: 1433 samples / 128 = 12 steps per epoch: epoch 1 checkpoints, rank 1 dies in epoch 2
    p = modelkit("train", "-m", "failing:build", "--epochs", "3", "--batch-size", "128", "-q",
                 "--device", "cpu", "--nproc-per-node", "2", "--out", "run", cwd=tmp_path, env=env)
    assert p.returncode == 1, p.stderr
    assert "rank 1" in p.stderr
    run = RunDir(tmp_path / "run")
    ckpts = sorted(run.checkpoints.iterdir())
    assert [c.name for c in ckpts] == ["ckpt-00000012.safetensors"]
    from modelkit.training.checkpoint import load_checkpoint

    load_checkpoint(ckpts[0])  # intact: passes its checksum
    assert not run.weights.exists()
    assert json.loads(run.record.read_text())["status"] in ("failed", "running")
