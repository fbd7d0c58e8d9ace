"""Sharded training (FSDP2) through torchrun: 2 gloo processes on CPU, the MNIST MLP on digits.

Real subprocesses, real torchrun, real gloo, real torch.distributed.checkpoint files. The model
is the registry's MnistMLP behind a BatchNorm, with one test hook (FAIL_RANK=R: rank R crashes in its 16th training
forward, i.e. in epoch 2 after the epoch-1 checkpoint), so an interrupted run can be resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelkit.runs import RunDir

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")

# digits: 1433 training samples / 128 = 12 steps per epoch; a checkpoint per epoch
ARGS = ["-m", "flaky:build", "--epochs", "2", "--batch-size", "128", "--device", "cpu"]
ARGS += ["--fingerprint-every", "4", "--max-shard-size", "200KB", "-c", "ckpt.toml", "-q"]

FLAKY_MLP = '''
import os
from torch import nn
from modelkit.models.mlp import MnistMLP

class FailsOnOneRank(MnistMLP):
    """MnistMLP behind a BatchNorm (buffers: kept equal across ranks as DDP does);
    FAIL_RANK=R makes rank R crash in its 16th training forward."""

    calls = 0

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes)
        self.norm = nn.BatchNorm1d(784)

    def forward(self, x):
        x = self.norm(x.flatten(1))
        if self.training:
            self.calls += 1
            fail = os.environ.get("FAIL_RANK")
            if fail is not None and os.environ.get("RANK") == fail and self.calls > 15:
                raise RuntimeError(f"rank {fail} lost its host (simulated)")
        return super().forward(x)

def build(num_classes: int = 10):
    return FailsOnOneRank(num_classes)
'''


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "flaky.py").write_text(FLAKY_MLP)
    (tmp_path / "ckpt.toml").write_text("checkpoint_every = 4\n")  # no flag for it
    return tmp_path


def modelkit(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "modelkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
    )


def _rows(run: RunDir) -> list[dict]:
    strip = {"elapsed_s", "samples_per_second"}
    return [{k: v for k, v in r.items() if k not in strip} for r in run.read_metrics()]


SHARDED = ["--shard", "--nproc-per-node", "2"]


@pytest.mark.slow
def test_sharded_run_checkpoints_with_dcp_and_resumes_bitwise(project: Path) -> None:
    rec, shards = _uninterrupted(project)  # a
    _crash_then_refuse_another_world_size(project)  # b, interrupted; c, its copy
    # resumed at the same world size: bitwise the uninterrupted run
    p = modelkit("train", "--resume", "b", "--nproc-per-node", "2", "-q", cwd=project)
    assert p.returncode == 0, p.stderr
    b = RunDir(project / "b")
    b_rec = b.read_record()
    assert b_rec["status"] == "complete" and b_rec["resumes"][-1]["from_step"] == 12
    assert b_rec["weights_sha256"] == rec["weights_sha256"]
    assert _rows(RunDir(project / "a")) == _rows(b)  # every loss, metric and fingerprint

    # a damaged shard is refused by name before anything is loaded; --fallback-checkpoint
    # resumes from the previous checkpoint instead, still bitwise
    shard = project / ".c.partial" / "checkpoints" / "ckpt-00000012.dcp" / shards[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    p = modelkit("train", "--resume", "c", "--nproc-per-node", "2", "-q", cwd=project)
    assert p.returncode == 2, p.stderr
    assert f"shard {shards[1]} fails its checksum" in p.stderr and "Traceback" not in p.stderr
    assert "--fallback-checkpoint" in p.stderr
    args = ["--resume", "c", "--nproc-per-node", "2", "--fallback-checkpoint", "-q"]
    p = modelkit("train", *args, cwd=project)
    assert p.returncode == 0, p.stderr
    c_rec = RunDir(project / "c").read_record()
    last = c_rec["resumes"][-1]
    assert last["from_step"] == 8
    assert last["rejected_checkpoints"][0]["checkpoint"] == "ckpt-00000012.safetensors"
    assert c_rec["weights_sha256"] == rec["weights_sha256"]


def _uninterrupted(project: Path) -> tuple[dict, list[str]]:
    """Run a: FSDP2 on 2 processes, uninterrupted; its record and its last shard files."""
    p = modelkit("train", *ARGS, *SHARDED, "--out", "a", cwd=project)
    assert p.returncode == 0, p.stderr
    a = RunDir(project / "a")
    rec = a.read_record()
    assert rec["distributed"] == {"world_size": 2, "backend": "gloo", "strategy": "fsdp2"}
    assert rec["status"] == "complete" and rec["metrics"]["test_accuracy"] > 0.5
    # BatchNorm, 3 Linear, root; built on the meta device (each rank initialises its shards)
    assert rec["sharding"] == {"strategy": "fsdp2", "units": 5, "init": "meta"}
    assert [set(r) for r in rec["peak_memory_per_rank"]] == [{"peak_rss_bytes"}] * 2
    # the gathered final weights: the Hub's sharded layout, every parameter whole
    assert rec["weights"]["layout"] == "sharded" and rec["num_parameters"] == 109_386 + 2 * 784
    from modelkit.weights.layout import read_layout
    from modelkit.weights.load import read_state_dict

    state = read_state_dict(read_layout(project / "a"))
    assert state["net.0.weight"].shape == (128, 784) and state["net.4.bias"].shape == (10,)
    assert int(state["norm.num_batches_tracked"]) == 24  # rank 0's buffers
    fingerprints = [r for r in a.read_metrics() if r["kind"] == "fingerprint"]
    assert [r["step"] for r in fingerprints] == [0, 4, 8, 12, 16, 20, 24]
    # the initial weights are bitwise a single process's (same seed): step 0's fingerprint
    p = modelkit("train", *ARGS, "--max-steps", "1", "--out", "single", cwd=project)
    assert p.returncode == 0, p.stderr
    single = [r for r in RunDir(project / "single").read_metrics() if r["kind"] == "fingerprint"]
    assert single[0]["step"] == 0 and single[0]["sha256"] == fingerprints[0]["sha256"]
    # its checkpoints: a head file + a folder of per-rank safetensors shards, nothing pickled
    assert sorted(p.name for p in a.checkpoints.iterdir()) == [  # every 4 steps, newest 2
        "ckpt-00000020.dcp",
        "ckpt-00000020.safetensors",
        "ckpt-00000024.dcp",
        "ckpt-00000024.safetensors",
    ]
    shards = sorted(p.name for p in (a.checkpoints / "ckpt-00000024.dcp").iterdir())
    assert shards == [
        "shard-00001-model-00001-of-00001.safetensors",
        "shard-00002-model-00001-of-00001.safetensors",
    ]
    _assert_safetensors_only(a.checkpoints / "ckpt-00000024.dcp")
    return rec, shards


def _crash_then_refuse_another_world_size(project: Path) -> None:
    """Run b: rank 1 crashes in epoch 2; every rank stops, the checkpoints stay intact; a
    resume at another world size is refused with the typed error and the way on."""
    env = {"FAIL_RANK": "1"}
    p = modelkit("train", *ARGS, *SHARDED, "--out", "b", cwd=project, env=env)
    assert p.returncode == 1, p.stderr
    assert "rank 1 failed" in p.stderr and "lost its host" in p.stderr
    assert "--resume b --nproc-per-node 2" in p.stderr and "Traceback" not in p.stderr
    staged = project / ".b.partial"
    assert sorted(q.name for q in (staged / "checkpoints").iterdir()) == [
        "ckpt-00000008.dcp",
        "ckpt-00000008.safetensors",
        "ckpt-00000012.dcp",
        "ckpt-00000012.safetensors",
    ]
    shutil.copytree(staged, project / ".c.partial")  # for the damaged-shard case
    p = modelkit("train", "--resume", "b", cwd=project)
    assert p.returncode == 2, p.stderr
    assert "was written by 2 process(es); this one has 1" in p.stderr
    assert "--nproc-per-node 2" in p.stderr and "Traceback" not in p.stderr


def _assert_safetensors_only(folder: Path) -> None:
    """Every file is safetensors: an 8-byte header length, then a JSON header (no pickle)."""
    for f in folder.iterdir():
        raw = f.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
        assert "DCP_SHARDING_INFO" in header["__metadata__"]


def test_restore_refuses_a_checkpoint_of_another_world_size(tmp_path: Path) -> None:
    """The checkpoint-level check (the run-level one is in the test above), on a real head."""
    import types

    import torch

    from modelkit.errors import WorldSizeMismatch
    from modelkit.runs import Checkpoint
    from modelkit.training.distributed import World
    from modelkit.training.state import restore

    head = Checkpoint.capture(
        step=12,
        model=torch.nn.Module(),
        objects={"distributed": {"world_size": 2, "backend": "gloo"}},
    ).save(tmp_path)
    trainer = types.SimpleNamespace(world=World(), sharded=True)
    with pytest.raises(WorldSizeMismatch) as info:
        restore(trainer, Checkpoint.load(head))
    assert (info.value.saved, info.value.now) == (2, 1)
    assert "checkpoint step 12 was written by 2 process(es)" in info.value.message


def test_shard_without_torchrun_is_refused(project: Path) -> None:
    p = modelkit("train", *ARGS, "--shard", "--out", "x", cwd=project)
    assert p.returncode == 2, p.stderr
    assert "needs 2 or more processes" in p.stderr and "--nproc-per-node 2" in p.stderr
    assert "Traceback" not in p.stderr and not (project / "x").exists()


def test_shard_with_an_unsupported_option_is_refused_before_launch(project: Path) -> None:
    args = [*ARGS, "--shard", "--nproc-per-node", "2", "--keep-best", "test_accuracy"]
    p = modelkit("train", *args, "--out", "x", cwd=project)
    assert p.returncode == 2, p.stderr
    assert "keep_best" in p.stderr and "drop --keep-best or --shard" in p.stderr
    assert "rank" not in p.stderr and not (project / "x").exists()  # no worker started


def test_a_torch_without_dcp_safetensors_storage_is_named(monkeypatch) -> None:
    """An older torch cannot be installed next to this one: remove the one attribute the
    check looks for, as an older torch.distributed.checkpoint would lack it."""
    import torch.distributed.checkpoint as dcp

    from modelkit.errors import ShardingUnsupported
    from modelkit.training.sharding import check_support

    check_support()  # this torch has everything
    monkeypatch.delattr(dcp, "HuggingFaceStorageWriter")
    with pytest.raises(ShardingUnsupported) as info:
        check_support()
    assert info.value.reason == "torch" and "HuggingFaceStorageWriter" in info.value.message
    assert "torch >= 2.8" in info.value.hint


def test_a_ranks_checkpoint_part_is_cut_into_files_by_size() -> None:
    """DCP's safetensors writer builds a whole file in memory: files are capped by size."""
    import torch

    from modelkit.training.sharded_checkpoint import file_groups

    tensors = {"d": torch.zeros(1), "a": torch.zeros(100), "b": torch.zeros(100)}
    tensors["c"] = torch.zeros(300)
    # one rank's share (of 2) in bytes: a 200, b 200, c 600, d 2
    assert file_groups(tensors, 2, limit=400) == {"a": 1, "b": 1, "c": 2, "d": 3}
    assert set(file_groups(tensors, 2).values()) == {1}
