"""The run-writing core (modelkit.tracking): own training loops, transactions, locks, resume.

Real processes and real files: tests/own_loop/train_digits.py is a plain PyTorch-example-style
script (its own model, Adadelta, StepLR, NLL loss, DataLoader) adopted with a few lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import modelkit
from modelkit.errors import BadInputError, CheckFailed, DataError, RunDirError, TrainingError
from modelkit.runs import RunRecord, read_run_record
from modelkit.tracking import data_summary, lock_path, staging_path, start_run
from modelkit.weights import verified_weights, weights_sha256

REPO = Path(__file__).resolve().parents[1]
SCRIPT_DIR = Path(__file__).resolve().parent / "own_loop"
SCRIPT = SCRIPT_DIR / "train_digits.py"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODELKIT_RUN_DIR", "MODELKIT_SEED")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **extra}


def train(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the adopted script in a fresh process (cwd = its folder, as a user would)."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        cwd=SCRIPT_DIR,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def own_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete, uninterrupted own-loop run (checkpoints every 10 steps)."""
    out = tmp_path_factory.mktemp("own") / "run"
    proc = train(out, "--checkpoint-every", "10", "--resume")
    assert proc.returncode == 0, proc.stderr
    return out


# ---- an own loop writes a run every verb reads ----------------------------------------------
def test_own_loop_writes_a_complete_record(own_run: Path) -> None:
    rec = read_run_record(own_run)
    raw = rec.raw
    assert rec.status == "complete" and rec.trainer == "user"
    assert raw["command"]["argv"][0].endswith("train_digits.py")
    assert Path(raw["command"]["cwd"]).resolve() == SCRIPT_DIR
    assert rec.git.commit is None or len(rec.git.commit) == 40
    assert rec.env.torch == torch.__version__
    assert rec.seed == 1 and rec.determinism.seeded[:3] == ["python", "numpy", "torch_cpu"]
    assert rec.data.fingerprint.startswith("sha256:") and rec.data.size == 1433
    assert rec.reference is not None and rec.reference.as_dict() == {
        "ref": "train_digits:Net",
        "kwargs": {"dropout": 0.25, "hidden": 32},
        "package": None,
        "version": None,
    }
    cfg = json.loads((own_run / "config.json").read_text())
    assert cfg["hidden"] == 32 and cfg["modelkit"]["reference"] == rec.reference.as_dict()
    assert cfg["modelkit"]["config"]["lr"] == 1.0 and rec.config_sha256
    assert verified_weights(own_run).files == ["model.safetensors"]
    assert weights_sha256(own_run) == rec.weights_sha256  # the tensors' identity
    assert set(rec.metrics) == {"accuracy", "train_loss"} and rec.metrics["accuracy"] > 0.5
    assert rec.num_parameters == 28 * 28 * 32 + 32 + 32 * 10 + 10
    rows = [json.loads(line) for line in (own_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "step"]
    assert steps == list(range(46))  # 2 epochs of 23 batches
    fps = [r["step"] for r in rows if r["kind"] == "fingerprint"]
    assert fps == [0, 25, 45]  # every 25 steps and the final state
    # no lock, no staging dir left behind
    assert not lock_path(own_run).exists() and not staging_path(own_run).exists()


def test_eval_accepts_an_own_loop_run(own_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    import shutil

    shutil.copytree(own_run, run)
    proc = subprocess.run(
        [sys.executable, "-m", "modelkit", "eval", str(run), "--data", "digits", "-f", "json"],
        cwd=SCRIPT_DIR,  # where the model's module is importable
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    recorded = read_run_record(run).metrics["accuracy"]
    assert result["accuracy"] == pytest.approx(recorded, abs=1e-6)
    assert result["weights_sha256"] == read_run_record(run).weights_sha256


# ---- resume after SIGKILL is bitwise -----------------------------------------------------------
def test_resume_after_sigkill_is_bitwise_identical(own_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed = train(out, "--checkpoint-every", "10", "--resume", "--kill-at-step", "27")
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and (staging_path(out) / "checkpoints").is_dir()
    resumed = train(out, "--checkpoint-every", "10", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "model.safetensors").read_bytes() == (own_run / "model.safetensors").read_bytes()
    assert (out / "metrics.jsonl").read_bytes() == (own_run / "metrics.jsonl").read_bytes()
    rec = read_run_record(out)
    assert rec.weights_sha256 == read_run_record(own_run).weights_sha256
    assert rec.raw["resumes"][0]["from_step"] == 20
    assert rec.raw["resumes"][0]["checkpoint"] == "ckpt-00000020.safetensors"


# ---- the lock: a second writer fails at once, naming the first --------------------------------
HOLD = textwrap.dedent(
    """
    import sys, time, modelkit
    run = modelkit.start_run(sys.argv[1], config={"a": 1})
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_second_writer_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked", holder.stderr
        t0 = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-c", HOLD, str(out)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert lines[0] == f"error: {out} is being written by another process (pid {holder.pid})"
        assert lines[1].startswith("hint: ") and len(lines) == 2  # no traceback
        assert time.monotonic() - t0 < 60  # at once, not after the holder's sleep
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: a new writer gets it
    run = start_run(out, config={"a": 1}, resume=True)
    run.fail("test over")


# ---- overwrite is a transaction -----------------------------------------------------------------
def test_failed_overwrite_leaves_the_old_run_byte_identical(own_run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(own_run, out)
    before = tree_bytes(out)
    proc = train(out, "--nan-at-step", "5", env=_env(MODELKIT_TEST_OVERWRITE="1"))
    assert proc.returncode == 1
    assert "error: loss became nan at step 5" in proc.stderr
    assert f"the previous run at {out} is intact" in proc.stderr
    assert tree_bytes(out) == before
    failed = json.loads((staging_path(out) / "run.json").read_text())
    assert failed["status"] == "failed" and "nan" in failed["error"]


def test_overwrite_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "run"
    model = torch.nn.Linear(3, 2)
    with start_run(out, config={"v": 1}, model=model) as run:
        run.log(0, loss=1.0)
        run.finish(model)
    with pytest.raises(RunDirError, match="already holds a complete run"):
        start_run(out, config={"v": 2}, model=model)
    assert not lock_path(out).exists() and not staging_path(out).exists()  # nothing written
    with start_run(out, config={"v": 2}, model=model, overwrite=True) as run:
        assert json.loads((out / "run.json").read_text())["config"] == {"v": 1}  # still old
        run.finish(model)
    assert read_run_record(out).raw["config"] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no .old / .partial / .lock


def test_non_run_directory_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    for kwargs in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(RunDirError, match="not a modelkit run directory") as err:
            start_run(out, config={}, **kwargs)
        assert err.value.exit_code == 2
    assert tree_bytes(out) == {"precious.txt": b"keep"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_run_dir_env_replaces_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(modelkit.RUN_DIR_ENV, str(tmp_path / "from-env"))
    model = torch.nn.Linear(2, 2)
    with start_run(tmp_path / "ignored", model=model) as run:
        run.finish(model)
    assert (tmp_path / "from-env" / "model.safetensors").is_file()
    assert not (tmp_path / "ignored").exists()


# ---- resume checks the config ---------------------------------------------------------------------
def test_resume_refuses_a_changed_config_listing_the_keys(tmp_path: Path) -> None:
    out = tmp_path / "run"
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = {"lr": 0.1, "epochs": 3, "arch": {"width": 8}}
    data = torch.zeros(3)
    with pytest.raises(TrainingError), start_run(out, config=cfg, model=model, data=data) as run:
        run.log(0, loss=1.0)
        run.checkpoint(model, opt, step=0)
        run.log(1, loss=float("nan"))
    changed = {"lr": 0.2, "epochs": 3, "arch": {"width": 16}, "new": True}
    with pytest.raises(RunDirError) as err:
        start_run(out, config=changed, model=model, resume=True)
    assert err.value.exit_code == 2
    assert "arch.width (8 -> 16)" in err.value.message
    assert "lr (0.1 -> 0.2)" in err.value.message and "new (unset -> true)" in err.value.message
    assert "epochs" not in err.value.message
    with pytest.raises(DataError, match="the data has fingerprint"):
        start_run(out, config=cfg, model=model, data=torch.ones(3), resume=True)
    # the same config resumes from the checkpoint
    with start_run(out, config=cfg, model=model, data=torch.zeros(3), resume=True) as run:
        start = run.resume(model, opt)
        assert start is not None and start["step"] == 0
        run.finish(model)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "step"] == [0]  # the NaN row was cut


def test_checkpoint_round_trips_every_state(tmp_path: Path) -> None:
    import random

    import numpy as np

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    run = start_run(tmp_path / "run", config={}, model=model)
    for step in range(3):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        sched.step()
        run.log(step, loss=0.5)
    run.checkpoint(
        model, opt, sched, step=2, state={"epoch": 1}, extra_tensors={"ema": torch.ones(3)}
    )
    expected = (random.random(), np.random.rand(), torch.rand(3), sched.get_last_lr())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    run.fail("simulated crash")
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.01)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    torch.manual_seed(123)
    random.seed(5)
    run2 = start_run(tmp_path / "run", config={}, model=model2, resume=True)
    start = run2.resume(model2, opt2, sched2)
    assert start is not None and start["step"] == 2 and start["state"] == {"epoch": 1}
    assert torch.equal(start["extra_tensors"]["ema"], torch.ones(3))
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2]) and sched2.get_last_lr() == expected[3]
    assert all(torch.equal(v, state[k]) for k, v in model2.state_dict().items())
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    run2.fail("done")


def test_checkpoint_refuses_unpicklable_free_state(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    run = start_run(tmp_path / "run", model=model)
    with pytest.raises(BadInputError, match="never pickle"):
        run.checkpoint(model, step=0, state={"f": object()})
    run.fail("done")


# ---- weights readers check the recorded sha256 ------------------------------------------------------
def _finished(tmp_path: Path) -> Path:
    from modelkit.models.mlp import MnistMLP

    model = MnistMLP(hidden_sizes=[16])
    with start_run(tmp_path / "run", model=model) as run:  # reference from the instance
        run.finish(model)
    return tmp_path / "run"


def test_weights_with_a_flipped_bit_are_refused(tmp_path: Path, cli) -> None:
    run = _finished(tmp_path)
    from modelkit.models.weights import load_model_from_dir

    model, cfg = load_model_from_dir(run)  # built from modelkit.reference
    assert cfg["modelkit"]["reference"]["ref"] == "modelkit.models.mlp:MnistMLP"
    assert type(model).__name__ == "MnistMLP" and model.net[0].out_features == 16
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (run / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match="does not match run.json"):
        load_model_from_dir(run)
    code, _, err = cli("eval", run, "--data", "digits")
    assert code == 3 and "does not match run.json" in err


def test_unrecorded_weights_need_trust_unrecorded(tmp_path: Path, cli) -> None:
    run = _finished(tmp_path)
    rec = json.loads((run / "run.json").read_text())
    del rec["weights_sha256"]
    (run / "run.json").write_text(json.dumps(rec))
    with pytest.raises(RunDirError, match="records no weights_sha256") as err:
        verified_weights(run)
    assert err.value.exit_code == 2 and "trust_unrecorded=True" in (err.value.hint or "")
    code, _, err_text = cli("eval", run, "--data", "digits")
    assert code == 2 and "--trust-unrecorded" in err_text
    code, out, err_text = cli("eval", run, "--data", "digits", "--trust-unrecorded", "-f", "json")
    assert code == 0, err_text
    assert json.loads(out)["samples"] == 364


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("status", None, "field 'status' is null"),
        ("seed", "7", "field 'seed' must be an integer"),
        ("weights_sha256", 5, "field 'weights_sha256' must be a string"),
        ("data", [], "field 'data' must be an object"),
        ("num_parameters", True, "field 'num_parameters' must be an integer"),
    ],
)
def test_run_record_names_a_wrong_field(field: str, value: object, message: str) -> None:
    good = {"status": "complete", "seed": 1, "data": {}, "weights_sha256": "ab"}
    assert RunRecord.from_dict(good, source="x/run.json").seed == 1
    with pytest.raises(RunDirError, match=message) as err:
        RunRecord.from_dict({**good, field: value}, source="x/run.json")
    assert err.value.exit_code == 2 and "x/run.json" in err.value.message


# ---- data fingerprints ---------------------------------------------------------------------------------
class Squares(torch.utils.data.Dataset):
    """A map-style dataset with a random transform (must not move the global RNG)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((2,), float(i * i)) + 0 * torch.rand(2), i % 3


def test_data_fingerprints(tmp_path: Path) -> None:
    x = torch.arange(12.0).reshape(6, 2)
    tds = data_summary(torch.utils.data.TensorDataset(x, torch.zeros(6)))
    assert tds["fingerprint"].startswith("sha256:") and tds["size"] == 6
    changed = data_summary(torch.utils.data.TensorDataset(x + 1, torch.zeros(6)))
    assert changed["fingerprint"] != tds["fingerprint"]
    small = data_summary(Squares(10))
    assert small["method"] == "every item" and small["size"] == 10
    torch.manual_seed(0)
    before = torch.get_rng_state()
    big = data_summary(Squares(5000))
    assert torch.equal(torch.get_rng_state(), before)  # hashing items consumed no randomness
    assert big["size"] == 5000 and "1024 evenly spaced items of 5000" in big["method"]
    assert big["fingerprint"] == data_summary(Squares(5000))["fingerprint"]
    loader = torch.utils.data.DataLoader(Squares(10), batch_size=4)
    assert data_summary(loader)["fingerprint"] == small["fingerprint"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("1")
    first = data_summary(tmp_path / "d")
    (tmp_path / "d" / "a.txt").write_text("2")
    assert data_summary(str(tmp_path / "d"))["fingerprint"] != first["fingerprint"]
    assert data_summary(tmp_path / "d" / "a.txt")["method"] == "file content"
    from modelkit.data import load_dataset

    digits = load_dataset("digits")
    mk = data_summary(digits)
    assert (mk["name"], mk["fingerprint"], mk["size"]) == ("digits", digits.fingerprint, 1433)
    for unknown in (None, iter([1, 2]), tmp_path / "missing"):
        assert data_summary(unknown)["fingerprint"] == "unknown"


def test_seed_everything_is_recorded(tmp_path: Path) -> None:
    block = modelkit.seed_everything(7)
    assert block["seed"] == 7 and block["enabled"] is False
    model = torch.nn.Linear(2, 2)
    with start_run(tmp_path / "run", model=model) as run:
        run.finish(model)
    rec = read_run_record(tmp_path / "run")
    assert rec.seed == 7 and rec.determinism.seeded[:3] == ["python", "numpy", "torch_cpu"]


def test_import_modelkit_does_not_import_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import modelkit; modelkit.__version__"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "modelkit" in imported and "torch" not in imported
    assert not any(name.startswith("torch") for name in imported)
    check = "import sys, modelkit; modelkit.start_run; print('torch' in sys.modules)"
    lazy = subprocess.run(
        [sys.executable, "-c", check], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert lazy.stdout.strip() == "False", lazy.stderr  # even the API's module is torch-free


def test_init_template_loop_writes_a_run(tmp_path: Path) -> None:
    from modelkit.scaffold import init_project

    root = tmp_path / "digit-net"
    init_project(root, git=False)
    proc = subprocess.run(
        [sys.executable, "-m", "digit_net.train", "--epochs", "1", "--out", "runs/own"],
        cwd=root,
        env=_env(PYTHONPATH=os.pathsep.join([str(REPO), str(root / "src")])),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rec = read_run_record(root / "runs/own")
    assert rec.complete and rec.trainer == "user" and rec.determinism.enabled is True
    assert rec.reference is not None and rec.reference.ref == "digit_net.model:DigitNet"
    assert rec.metrics["test_accuracy"] > 0.3
    assert (root / "runs/own/checkpoints/ckpt-00000022.safetensors").is_file()


def test_stale_files_of_a_killed_publish_are_cleaned(tmp_path: Path) -> None:
    out = tmp_path / "run"
    model = torch.nn.Linear(2, 2)
    with start_run(out, model=model) as run:
        run.finish(model)
    before = tree_bytes(out)
    # killed between moving the old run aside and moving the new one in, with a temp file left
    os.replace(out, tmp_path / ".run.old-999")
    staging_path(out).mkdir()
    (staging_path(out) / ".run.json.abc.tmp").write_text("{")
    with pytest.raises(RunDirError, match="already holds a complete run"):
        start_run(out, model=model)
    assert tree_bytes(out) == before  # the old run is back in place
    assert not (staging_path(out) / ".run.json.abc.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.partial", "run"]


def test_resume_adopts_an_unfinished_run_in_place(tmp_path: Path) -> None:
    out = tmp_path / "run"
    model = torch.nn.Linear(2, 2)
    run = start_run(out, config={"k": 1}, model=model)
    run.log(0, loss=1.0)
    run.checkpoint(model, step=0)
    run.fail("killed")
    os.replace(staging_path(out), out)  # a run killed where older versions wrote it
    with pytest.raises(RunDirError, match="holds an unfinished run"):
        start_run(out, config={"k": 1}, model=model)
    with start_run(out, config={"k": 1}, model=model, resume=True) as run:
        assert run.dir.path == staging_path(out)
        start = run.resume(model)
        assert start is not None and start["step"] == 0
        run.finish(model)
    assert read_run_record(out).complete and not staging_path(out).exists()


def test_builtin_trainer_shape_is_read_by_eval(tmp_path: Path, cli) -> None:
    """What `modelkit train` passes (its TrainConfig, registry name, reference) reads back."""
    from modelkit.config import TrainConfig
    from modelkit.data import load_dataset
    from modelkit.models.reference import reference_for_name
    from modelkit.models.registry import build_model

    cfg = TrainConfig(model="mnist-mlp", data="digits")
    data = load_dataset("digits")
    model, kwargs = build_model("mnist-mlp", kwargs=cfg.model_kwargs, data_hints=data.model_hints())
    cfg = cfg.replace(model_kwargs=kwargs)
    ref = reference_for_name("mnist-mlp", kwargs=kwargs)
    out = tmp_path / "run"
    # modelkit train's own knobs live in the run core (RunSpec), not in start_run
    from modelkit.runs import RunSpec, open_session

    spec = RunSpec(
        config=cfg.to_dict(), config_key="train", name="mnist-mlp", reference=ref, model=model,
        data=data, seed=cfg.seed, trainer="modelkit",
    )  # fmt: skip
    open_session(out, spec).finish(model, metrics={"test_accuracy": 0.1})
    rec = read_run_record(out)
    assert rec.trainer == "modelkit" and rec.config_sha256 == cfg.digest()
    assert rec.data.spec == "digits" and rec.data.fingerprint == data.fingerprint
    config = json.loads((out / "config.json").read_text())
    assert (
        config["modelkit"]["model"] == "mnist-mlp"
        and config["modelkit"]["train"]["data"] == "digits"
    )
    assert config["modelkit"]["reference"]["ref"] == "modelkit.models.mlp:mnist_mlp"
    code, stdout, err = cli("eval", out, "-f", "json")  # the data spec comes from the config
    assert code == 0, err
    assert json.loads(stdout)["data"]["same_as_training"] is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_after_sigkill_on_cuda_is_bitwise_identical(tmp_path: Path) -> None:
    args = ("--checkpoint-every", "10", "--resume", "--device", "cuda", "--deterministic")
    whole = train(tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr
    killed = train(tmp_path / "run", *args, "--kill-at-step", "27")
    assert killed.returncode == -signal.SIGKILL
    resumed = train(tmp_path / "run", *args)
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_run_record(tmp_path / "whole"), read_run_record(tmp_path / "run")
    assert a.weights_sha256 == b.weights_sha256 and a.env.device_type == "cuda"
    assert "rng.cuda.0" in _checkpoint_tensor_names(tmp_path / "run" / "checkpoints")


def _checkpoint_tensor_names(directory: Path) -> set[str]:
    from safetensors import safe_open

    newest = sorted(directory.glob("ckpt-*.safetensors"))[-1]
    with safe_open(str(newest), framework="pt") as f:
        return {k.removeprefix("extra.") for k in f.keys()}  # noqa: SIM118


def _tiny_run(out: Path) -> list[dict]:
    modelkit.seed_everything(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    with start_run(out, model=model, fingerprint_every=2) as run:
        for step in range(7):
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(step, loss=loss.item())
        run.finish(model)
    return [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]


def test_perturb_hook_moves_the_named_parameter_at_its_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = [r for r in _tiny_run(tmp_path / "a") if r["kind"] == "fingerprint"]
    monkeypatch.setenv("MODELKIT_PERTURB", "4:1.bias")
    nudged = [r for r in _tiny_run(tmp_path / "b") if r["kind"] == "fingerprint"]
    assert [r["step"] for r in base] == [0, 2, 4, 6]
    assert [a["sha256"] == b["sha256"] for a, b in zip(base, nudged, strict=True)] == [
        True,
        True,
        False,
        False,
    ]
    assert read_run_record(tmp_path / "b").raw["perturbed"] == "4:1.bias"
    monkeypatch.setenv("MODELKIT_PERTURB", "4:nope")
    with pytest.raises(BadInputError, match="must be STEP:PARAM"):
        start_run(tmp_path / "c", model=torch.nn.Linear(2, 2))
    assert not (tmp_path / "c").exists() and not staging_path(tmp_path / "c").exists()


def test_deterministic_env_turns_on_deterministic_algorithms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELKIT_DETERMINISTIC", "1")
    try:
        assert modelkit.seed_everything(1)["use_deterministic_algorithms"] is True
    finally:
        torch.use_deterministic_algorithms(False)
        monkeypatch.setattr("modelkit.runs.seeding._seeding", None)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        # the first modelkit call of a script installs the hook: seed_everything too
        ("modelkit.seed_everything(-5)", 2, "error: seed must be an integer in [0, 2**63), got -5"),
        (
            "with modelkit.start_run(OUT, config={}, model=m) as r:\n    r.log(0, loss='abc')",
            2,
            "error: loss must be a number, got 'abc' at step 0",
        ),
        (
            "with modelkit.start_run(OUT, config={}, model=m) as r:\n"
            "    r.finish(m)\n    r.finish(m)",
            2,
            "error: the run OUT is already finished or failed",
        ),
    ],
)
def test_api_misuse_ends_a_script_with_one_error_line(
    tmp_path: Path, body: str, code: int, message: str
) -> None:
    out = str(tmp_path / "run")
    script = f"import modelkit, torch\nOUT = {out!r}\nm = torch.nn.Linear(2, 2)\n" + body
    done = subprocess.run(
        [sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert lines[0] == message.replace("OUT", out) and lines[1].startswith("hint: ")
    assert len(lines) == 2, done.stderr  # no traceback, no warning
