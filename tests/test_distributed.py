"""Multi-process training through torchrun: 2-process gloo DDP on CPU, bitwise across runs.

Real subprocesses, real torchrun, real gloo. One user model (a linear layer that can be told
to crash on one rank) keeps every run a few seconds long.
"""

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

# digits: 1433 training samples / 128 = 12 steps per epoch; one checkpoint per epoch
ARGS = ["-m", "flaky:build", "--epochs", "2", "--batch-size", "128", "-q", "--device", "cpu"]

FLAKY_MODEL = '''
import os
import torch
from torch import nn

class FailsOnOneRank(nn.Module):
    """A linear classifier; FAIL_RANK=R makes rank R crash in its 16th training forward."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(784, num_classes)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        if self.training:
            self.calls += 1
            fail = os.environ.get("FAIL_RANK")
            if fail is not None and os.environ.get("RANK") == fail and int(self.calls) > 15:
                raise RuntimeError(f"rank {fail} lost its GPU (simulated)")
        return self.fc(x.flatten(1))

def build(num_classes: int = 10):
    return FailsOnOneRank(num_classes)
'''


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "flaky.py").write_text(FLAKY_MODEL)
    return tmp_path


def modelkit(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "modelkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
    )


def test_two_process_ddp_is_bitwise_reproducible_and_resumes(project: Path) -> None:
    # run a: two processes, gloo, uninterrupted
    p = modelkit("train", *ARGS, "--nproc-per-node", "2", "--out", "a", cwd=project)
    assert p.returncode == 0, p.stderr
    a = RunDir(project / "a").read_record()
    assert a["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert a["status"] == "complete" and a["metrics"]["test_accuracy"] > 0.5
    assert a["accel"]["precision"] == "fp32" and a["env"]["threads"] == 1
    rows = RunDir(project / "a").read_metrics()  # only rank 0 wrote: nothing duplicated
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    assert sorted(p.name for p in (project / "a").iterdir()) == [
        "checkpoints",
        "config.json",
        "metrics.jsonl",
        "model.safetensors",
        "run.json",
    ]

    # run b: rank 1 crashes in epoch 2: every rank stops, exit 1, the checkpoint stays intact
    p = modelkit(
        "train", *ARGS, "--nproc-per-node", "2", "--out", "b", cwd=project, env={"FAIL_RANK": "1"}
    )
    assert p.returncode == 1, p.stderr
    assert "rank 1 failed" in p.stderr and "lost its GPU" in p.stderr
    assert "Traceback" not in p.stderr
    assert "--resume b --nproc-per-node 2" in p.stderr  # the hint names the way on
    b = RunDir(project / ".b.partial")  # a failed run stays in its staging directory
    assert not (project / "b").exists()
    ckpts = sorted(b.checkpoints.iterdir())
    assert [c.name for c in ckpts] == ["ckpt-00000012.safetensors"]
    from modelkit.training.checkpoint import load_checkpoint

    _tensors, meta = load_checkpoint(ckpts[0])  # passes its checksums
    assert meta["objects"]["user"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert not b.weights.exists()
    record = b.read_record()
    assert record["status"] == "failed" and record["last_good_checkpoint"] == ckpts[0].name

    # resume only at the recorded world size
    p = modelkit("train", "--resume", "b", cwd=project)
    assert p.returncode == 2 and "written by 2 process(es)" in p.stderr, p.stderr
    assert "--nproc-per-node 2" in p.stderr
    p = modelkit("train", "--resume", "b", "--nproc-per-node", "2", "-q", cwd=project)
    assert p.returncode == 0, p.stderr

    # the interrupted + resumed run equals the uninterrupted one, bit for bit
    b = RunDir(project / "b")  # published once complete
    b_rec = b.read_record()
    assert b_rec["status"] == "complete" and b_rec["resumes"][-1]["from_step"] == 12
    assert b_rec["weights_sha256"] == a["weights_sha256"]
    assert (project / "b" / "model.safetensors").read_bytes() == (
        project / "a" / "model.safetensors"
    ).read_bytes()
    strip = {"elapsed_s", "samples_per_second"}
    rows_a = [{k: v for k, v in r.items() if k not in strip} for r in rows]
    rows_b = [{k: v for k, v in r.items() if k not in strip} for r in b.read_metrics()]
    assert rows_a == rows_b

    # one process, the same global batches: close, never claimed equal
    p = modelkit("train", *ARGS, "--out", "single", cwd=project)
    assert p.returncode == 0, p.stderr
    single = RunDir(project / "single").read_record()
    assert single["distributed"] == {"world_size": 1, "backend": None}
    assert abs(single["metrics"]["test_accuracy"] - a["metrics"]["test_accuracy"]) < 0.05
    assert abs(single["metrics"]["test_loss"] - a["metrics"]["test_loss"]) < 1e-3


def test_repro_two_processes_is_identical(project: Path) -> None:
    cfg = project / "run.toml"
    cfg.write_text('model = "flaky:build"\nepochs = 1\nbatch_size = 256\ndevice = "cpu"\n')
    p = modelkit("repro", "run.toml", "--nproc-per-node", "2", "--format", "json", cwd=project)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["identical"] is True
    assert report["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert report["fingerprints_compared"] >= 2
    assert report["state_sha256"]["a"] == report["state_sha256"]["b"]


def test_more_processes_than_cores_is_refused(project: Path) -> None:
    from modelkit.training.launch import available_cores

    n = available_cores() + 1
    p = modelkit("train", *ARGS, "--nproc-per-node", str(n), "--out", "x", cwd=project)
    assert p.returncode == 2, p.stderr
    assert f"more than the {n - 1} CPU cores available" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (project / "x").exists()


def test_port_in_use_is_named(project: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = modelkit(
            "train",
            *ARGS,
            "--nproc-per-node",
            "2",
            "--master-port",
            str(port),
            "--out",
            "x",
            cwd=project,
        )
    assert p.returncode == 2, p.stderr
    assert f"port {port}" in p.stderr and "already in use" in p.stderr
    assert not (project / "x").exists()


def test_fp16_on_cpu_and_nccl_without_cuda_are_refused(project: Path) -> None:
    p = modelkit("train", *ARGS, "--precision", "fp16", "--out", "x", cwd=project)
    assert p.returncode == 2 and "fp16 needs a CUDA device" in p.stderr, p.stderr
    assert not (project / "x").exists()
    import torch

    if not torch.cuda.is_available():
        p = modelkit("train", *ARGS, "--device", "cuda", "--nproc-per-node", "2", cwd=project)
        assert p.returncode == 2 and "no CUDA device" in p.stderr, p.stderr


def test_launch_failure_prefers_the_root_cause(tmp_path: Path, monkeypatch) -> None:
    """torchrun reports every failed rank; the message names the root cause, not the ranks
    it stopped. Real error files (as workers write them) read by torchrun's ProcessFailure."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from modelkit.errors import BadInputError
    from modelkit.training.distributed import PeerFailure, World, write_error_file
    from modelkit.training.launch import launch_failure

    def failed(rank: int, exc: BaseException) -> ProcessFailure:
        path = tmp_path / f"error-{rank}.json"
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
        write_error_file(exc, World(rank=rank, size=2))
        return ProcessFailure(local_rank=rank, pid=1, exitcode=1, error_file=str(path))

    first = failed(0, PeerFailure("stopped because another rank failed"))
    err = launch_failure({0: first, 1: failed(1, RuntimeError("boom"))})
    assert err.message == "rank 1 failed: RuntimeError: boom (rank 0 stopped)"
    assert err.exit_code == 1
    bad = launch_failure({1: failed(1, BadInputError("no such data", hint="fix --data"))})
    assert bad.exit_code == 2 and bad.message == "rank 1 failed: no such data"
    assert bad.hint == "fix --data"


def test_launch_failure_names_a_crashed_rank_not_the_one_torchrun_stopped(tmp_path: Path) -> None:
    """A rank that aborts (SIGABRT, no error file) is the root cause; the rank torchrun then
    stopped with SIGTERM is not, even when it has the lower rank."""
    import signal

    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from modelkit.training.launch import launch_failure

    def killed(rank: int, sig: int) -> ProcessFailure:
        missing = str(tmp_path / f"no-error-file-{rank}.json")
        return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=-sig, error_file=missing)

    err = launch_failure({0: killed(0, signal.SIGTERM), 1: killed(1, signal.SIGABRT)})
    assert err.message == "rank 1 failed: Signal 6 (SIGABRT) received by PID 101 (rank 0 stopped)"


def test_bf16_on_cpu_trains_and_is_recorded(project: Path) -> None:
    p = modelkit("train", *ARGS, "--epochs", "1", "--precision", "bf16", "--out", "bf", cwd=project)
    assert p.returncode == 0, p.stderr
    rec = RunDir(project / "bf").read_record()
    assert rec["accel"]["precision"] == "bf16"
    assert rec["accel"]["autocast"] == {"device_type": "cpu", "dtype": "torch.bfloat16"}
    assert rec["accel"]["grad_scaler"] is False and rec["accel"]["tf32_matmul"] is False
    assert (
        json.loads((project / "bf" / "config.json").read_text())["modelkit"]["train"]["precision"]
        == "bf16"
    )
    assert rec["metrics"]["test_accuracy"] > 0.5
