"""`modelkit train` / `eval` / `models` through the real CLI, including every bad-input case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelkit.runs import RunDir

FAST = ("--epochs", "2", "--quiet")


def test_train_default_writes_complete_run(cli, in_tmp: Path) -> None:
    code, _, err = cli("train", *FAST, "--out", "run")
    assert code == 0, err
    run = RunDir(in_tmp / "run")
    for p in (run.config, run.record, run.metrics, run.weights):
        assert p.is_file(), p
    record = run.read_record()
    assert record["status"] == "complete" and record["data"]["spec"] == "digits"
    assert record["samples_per_second"] > 0 and record["env"]["torch"]
    assert record["data"]["fingerprint"].startswith("sha256:")
    assert len(record["weights_sha256"]) == 64 and record["seed"] == 0
    cfg = run.read_config()
    assert cfg["modelkit"]["model"] == "mnist-mlp" and cfg["num_classes"] == 10
    kinds = [r["kind"] for r in run.read_metrics()]
    assert kinds.count("epoch") == 2 and "step" in kinds
    assert list(run.checkpoints.iterdir())  # atomic checkpoints were written
    assert not list(run.path.glob(".*.tmp"))  # nothing half-written left behind


def test_eval_json_and_eval_file(cli, in_tmp: Path) -> None:
    assert cli("train", *FAST, "--out", "run")[0] == 0
    code, out, _ = cli("eval", "run", "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert 0.5 < result["accuracy"] <= 1.0
    assert len(result["confusion_matrix"]) == 10 and set(result["per_class_accuracy"]) == set(
        map(str, range(10))
    )
    assert json.loads((in_tmp / "run" / "eval.json").read_text())["accuracy"] == result["accuracy"]
    code, out, _ = cli("eval", "run")
    assert code == 0 and "confusion matrix" in out


def test_config_file_and_overrides(cli, in_tmp: Path) -> None:
    (in_tmp / "c.toml").write_text(
        "[train]\nepochs = 1\nbatch-size = 64\nlr = 0.01\nmodel_kwargs = {hidden_sizes = [16]}\n"
    )
    (in_tmp / "c.yaml").write_text("epochs: 1\noptimizer: sgd\n")
    assert cli("train", "-c", "c.toml", "--lr", "0.003", "-q", "--out", "a")[0] == 0
    cfg = RunDir(in_tmp / "a").train_config()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.model_kwargs["hidden_sizes"]) == (
        1,
        64,
        0.003,
        [16],
    )
    assert cli("train", "-c", "c.yaml", "-q", "--out", "b")[0] == 0
    assert RunDir(in_tmp / "b").train_config().optimizer == "sgd"


def test_models_lists_registry(cli, in_tmp: Path) -> None:
    code, out, _ = cli("models", "--format", "json")
    data = json.loads(out)
    assert (
        code == 0 and {"mnist-mlp", "small-cnn"} <= set(data["models"]) and "digits" in data["data"]
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--model", "mnist-mlpp"), "did you mean 'mnist-mlp'"),
        (("--data", "digitz"), "did you mean 'digits'"),
        (("--data", "mnist:/no/such/dir"), "not found"),
        (("--model", "no_such_pkg.mod:factory"), "cannot import model 'no_such_pkg.mod:factory'"),
        (("--model", "json:no_such_factory"), "has no attribute 'no_such_factory'"),
        (("--optimizer", "adagrd"), "unknown optimizer 'adagrd'; did you mean 'Adagrad'"),
        (("--epochs", "0"), "epochs must be >= 1"),
        (("--config", "missing.toml"), "config file not found"),
        (("--model", "small-cnn", "--data", "digits", "--model-kwargs-bad"), "No such option"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, in_tmp: Path, args, needle) -> None:
    code, _out, err = cli("train", *FAST, *args, "--out", "run")
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err
    assert not (in_tmp / "run").exists()  # nothing half-written


def test_refuses_non_empty_out_unless_overwrite(cli, in_tmp: Path) -> None:
    (in_tmp / "run").mkdir()
    (in_tmp / "run" / "precious.txt").write_text("keep me")
    code, _, err = cli("train", *FAST, "--out", "run")
    assert code == 2 and "not a modelkit run directory" in err  # never replaces foreign data
    code, _, err = cli("train", *FAST, "--out", "run", "--overwrite")
    assert code == 2 and "not a modelkit run directory" in err  # never deletes foreign data
    assert (in_tmp / "run" / "precious.txt").read_text() == "keep me"
    assert cli("train", *FAST, "--out", "run2")[0] == 0
    code, _, err = cli("train", *FAST, "--out", "run2")
    assert code == 2 and "already holds a complete run" in err and "--overwrite" in err
    assert cli("train", *FAST, "--out", "run2", "--overwrite")[0] == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out(cli, in_tmp: Path) -> None:
    (in_tmp / "ro").mkdir(mode=0o500)
    code, _, err = cli("train", *FAST, "--out", "ro/run")
    assert code == 2 and "cannot write" in err


def test_out_is_a_file(cli, in_tmp: Path) -> None:
    (in_tmp / "f").write_text("x")
    code, _, err = cli("train", *FAST, "--out", "f")
    assert code == 2 and "not a directory" in err


def test_unwritable_out_under_a_file(cli, in_tmp: Path) -> None:
    (in_tmp / "f").write_text("x")
    code, _, err = cli("train", *FAST, "--out", "f/run")
    assert code == 2 and "cannot write" in err


NAN_MODEL = '''
import torch
from torch import nn

class GoesNaN(nn.Module):
    """Healthy for `healthy` steps, then produces NaN logits."""
    def __init__(self, healthy: int = 12):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        self.healthy = healthy
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
    def forward(self, x):
        if self.training:
            self.calls += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.calls > self.healthy else out

def build(num_classes: int = 10):
    return GoesNaN()
'''


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cli, in_tmp: Path, monkeypatch) -> None:
    (in_tmp / "nanmodel.py").write_text(NAN_MODEL)
    monkeypatch.syspath_prepend(str(in_tmp))
    # digits: 1433 train samples / 128 = 12 steps per epoch -> epoch 1 is healthy, epoch 2 NaNs
    code, _, err = cli("train", "-m", "nanmodel:build", "--epochs", "3", "-q", "--out", "run")
    assert code == 1 and "loss became nan" in err and "last good checkpoint" in err
    record = RunDir(in_tmp / ".run.partial").read_record()  # a failed run stays staged
    assert (
        record["status"] == "failed"
        and record["last_good_checkpoint"] == "ckpt-00000012.safetensors"
    )
    assert not (in_tmp / "run" / "model.safetensors").exists()


def test_eval_bad_inputs(cli, in_tmp: Path) -> None:
    code, _, err = cli("eval", "nowhere")
    assert code == 2 and "run directory not found" in err
    assert cli("train", *FAST, "--out", "run")[0] == 0
    weights = in_tmp / "run" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    code, _, err = cli("eval", "run")
    assert code == 3 and "does not match run.json" in err


def test_debug_shows_traceback(in_tmp: Path) -> None:
    env = {**os.environ, "MODELKIT_DEBUG": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "modelkit", "eval", "nowhere"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 2 and "Traceback" in p.stderr
    env.pop("MODELKIT_DEBUG")
    p = subprocess.run(
        [sys.executable, "-m", "modelkit", "eval", "nowhere"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") <= 2


def test_help_does_not_import_torch() -> None:
    code = "import sys; from modelkit.cli.app import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "modelkit", "--help"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and " torch" not in p.stderr.replace("torch_", "")
    for verb in ("train", "eval", "models"):
        p = subprocess.run(
            [sys.executable, "-m", "modelkit", verb, "--help"], capture_output=True, text=True
        )
        assert p.returncode == 0 and "Examples" in p.stdout
