"""Crash-safe checkpoints and `modelkit train --resume`: SIGKILL a real training process at
random moments (mid-epoch included), resume, and end with bitwise identical weights."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelkit.io import sha256_file
from modelkit.runs import RunDir

# a tiny CNN: dropout (RNG state), Adam (optimizer state), cosine LR (scheduler state),
# 45 steps per epoch and a checkpoint every 7 steps, so most checkpoints are mid-epoch
KILL_CONFIG = """
model = "small-cnn"
data = "digits"
epochs = 2
batch_size = 32
lr = 0.003
lr_schedule = "cosine"
checkpoint_every = 7
fingerprint_every = 3
deterministic = true
device = "cpu"
threads = 1
model_kwargs = { channels = [4, 8], hidden = 32, dropout = 0.3 }
"""
STEPS_PER_EPOCH = 45  # ceil(1437 / 32)
TOTAL = 90


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelkit", *args]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _live(run: Path) -> Path:
    """Where an unfinished run is written: its staging directory (see modelkit.tracking)."""
    staging = run.parent / f".{run.name}.partial"
    return staging if staging.is_dir() else run


def _ckpt_steps(run: Path) -> list[int]:
    d = _live(run) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(int(p.name[5:13]) for p in d.glob("ckpt-*.safetensors"))


def _comparable_metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in RunDir(run).read_metrics()]


def _kill_when(proc: subprocess.Popen, cond, *, delay: float, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` ``delay`` s after ``cond()`` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def test_sigkill_at_random_points_then_resume_is_bitwise_identical(tmp_path: Path) -> None:
    cfg = tmp_path / "kill.toml"
    cfg.write_text(KILL_CONFIG)
    env = _env()
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = subprocess.Popen(
        _cmd("train", "-c", str(cfg), "-q", "--out", str(ref)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seed = int(os.environ.get("MODELKIT_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # kill 1: after run.json exists but (usually) before the first checkpoint; kills 2..6 at
    # random steps, each after that step's checkpoint plus a random 0-25 ms (mid-step,
    # mid-write, mid-epoch)
    targets = [rng.randrange(lo, lo + 12) for lo in (7, 21, 35, 49, 63)]
    proc = subprocess.Popen(
        _cmd("train", "-c", str(cfg), "-q", "--out", str(run)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kills = int(
        _kill_when(proc, lambda: (_live(run) / "run.json").is_file(), delay=rng.uniform(0, 0.3))
    )
    for target in targets:
        if proc.poll() is not None:
            proc = subprocess.Popen(
                _cmd("train", "--resume", str(run), "-q"),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        kills += _kill_when(
            proc,
            lambda t=target: any(s >= t for s in _ckpt_steps(run)),
            delay=rng.uniform(0, 0.025),
        )
    final = subprocess.run(
        _cmd("train", "--resume", str(run), "-q"), env=env, capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr
    assert reference.wait() == 0, reference.stderr.read()

    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete"
    resumed_from = [r["from_step"] for r in record["resumes"]]
    assert kills >= 5, f"only {kills} kills landed (seed {seed})"
    assert any(s % STEPS_PER_EPOCH for s in resumed_from), f"no mid-epoch resume: {resumed_from}"
    # the point of it all: same bytes as the uninterrupted run, and the same metrics
    assert sha256_file(run / "model.safetensors") == sha256_file(ref / "model.safetensors"), (
        f"kill seed {seed}, resumed from {resumed_from}"
    )
    assert record["weights_sha256"] == json.loads((ref / "run.json").read_text())["weights_sha256"]
    assert _comparable_metrics(run) == _comparable_metrics(ref)
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_corrupt_checkpoint_is_detected_and_fallback_is_explicit(cli, in_tmp: Path) -> None:
    from modelkit.config import TrainConfig
    from modelkit.training.loop import train

    cfg = TrainConfig(epochs=1, batch_size=64, checkpoint_every=5, keep_checkpoints=3, device="cpu")
    train(cfg, out=in_tmp / "ref")
    train(cfg, out=in_tmp / "run")
    run = in_tmp / "run"
    ckpts = sorted((run / "checkpoints").glob("ckpt-*.safetensors"))
    assert [p.name for p in ckpts] == [f"ckpt-000000{s}.safetensors" for s in (15, 20, 23)]
    # pretend the run was killed after writing checkpoint 23: drop the outputs, then flip one
    # byte inside the tensor data of the newest checkpoint
    (run / "model.safetensors").unlink()
    rec = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**rec, "status": "running"}))
    data = bytearray(ckpts[-1].read_bytes())
    data[-100] ^= 0x01
    ckpts[-1].write_bytes(bytes(data))

    code, _, err = cli("train", "--resume", "run", "-q")
    assert code == 2 and "ckpt-00000023.safetensors fails its checksum" in err
    assert "--fallback-checkpoint" in err and not (run / "model.safetensors").exists()

    # the run was adopted into its staging directory (modelkit.tracking): it is resumed there
    newest = _live(run) / "checkpoints" / ckpts[-1].name
    # a truncated file is reported too
    newest.write_bytes(bytes(data[: len(data) // 2]))
    code, _, err = cli("train", "--resume", "run", "-q")
    assert code == 2 and "corrupt or truncated" in err

    code, _, err = cli("train", "--resume", "run", "-q", "--fallback-checkpoint")
    assert code == 0, err
    assert "skipped corrupt checkpoint ckpt-00000023.safetensors" in err
    assert "resumed from step 20" in err
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete"
    assert record["resumes"][-1]["rejected_checkpoints"][0]["checkpoint"] == ckpts[-1].name
    # falling back and re-training steps 21..23 gives the uninterrupted run's weights
    assert sha256_file(run / "model.safetensors") == sha256_file(in_tmp / "ref/model.safetensors")
    assert _comparable_metrics(run) == _comparable_metrics(in_tmp / "ref")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--resume", "nope"), "run directory not found"),
        (("--resume", "done", "--epochs", "3"), "--epochs cannot be combined"),
        (("--fallback-checkpoint",), "only applies with --resume"),
    ],
)
def test_resume_bad_inputs(cli, in_tmp: Path, args: tuple[str, ...], needle: str) -> None:
    (in_tmp / "done").mkdir()
    code, _, err = cli("train", *args, "-q")
    assert code == 2 and needle in err and "hint:" in err


def test_resume_of_a_complete_run_is_a_no_op(cli, in_tmp: Path) -> None:
    assert cli("train", "--epochs", "1", "-q", "--out", "r")[0] == 0
    before = sha256_file(in_tmp / "r/model.safetensors")
    code, _, err = cli("train", "--resume", "r", "-q")
    assert code == 0 and "already complete" in err
    assert sha256_file(in_tmp / "r/model.safetensors") == before


def test_checkpoint_round_trips_rng_scheduler_and_grad_scaler(tmp_path: Path) -> None:
    """The one Checkpoint type (modelkit.runs.checkpoint) saves and restores itself."""
    import random as pyrandom

    import numpy as np
    import torch

    from modelkit.runs import Checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    scaler.scale(torch.ones(()))  # initialises the scale, then set it explicitly
    scaler.update(512.0)
    path = Checkpoint.capture(
        step=1,
        model=model,
        optimizer=opt,
        scheduler=sched,
        state={"epoch": 0, "batch": 1},
        objects={"scaler": scaler.state_dict()},
    ).save(tmp_path)
    expected = (pyrandom.random(), np.random.rand(), torch.rand(2))
    ckpt = Checkpoint.load(path)
    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    ckpt.restore(model2, opt2, sched2)  # every RNG too
    assert (pyrandom.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])
    assert torch.equal(model2.weight, model.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])  # fmt: skip
    assert sched2.get_last_lr() == sched.get_last_lr()
    scaler2 = torch.amp.GradScaler("cpu")
    scaler2.load_state_dict(ckpt.objects["scaler"])
    assert scaler2.get_scale() == scaler.get_scale() == 512.0
    assert ckpt.state == {"epoch": 0, "batch": 1}
