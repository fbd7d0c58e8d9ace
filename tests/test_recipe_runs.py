"""Real recipes from a config file, no glue code, each killed mid-run and resumed bitwise:

(a) a user CNN ending in log_softmax, Adadelta lr 1.0, StepLR(step_size=1, gamma=0.7) per
    epoch, NLL loss, Normalize(0.1307, 0.3081), on the bundled digits (with max_steps ending
    the run mid-epoch and keep_best);
(b) a user CNN at 32x32 with AdamW, random crop + horizontal flip, on an image folder.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from test_resume import _ckpt_steps, _cmd, _comparable_metrics, _env, _kill_when

from modelkit.io import sha256_file

MNIST_NET = '''
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """The PyTorch examples' MNIST CNN, narrowed: ends in log_softmax (NLL loss)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.conv2 = nn.Conv2d(4, 8, 3, 1)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(8 * 12 * 12, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = self.dropout(x.flatten(1))
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)
'''

MNIST_RECIPE = """
model = "main:Net"
data = "digits"
epochs = 2
max_steps = 30                  # 23 steps per epoch: the run ends mid-epoch 2
batch_size = 64
optimizer = {name = "Adadelta", lr = 1.0}
lr_schedule = {name = "StepLR", step_size = 1, gamma = 0.7, interval = "epoch"}
loss = "nll"
normalize = {mean = [0.1307], std = [0.3081]}
keep_best = "test_accuracy"
grad_clip = 5.0
checkpoint_every = 4
fingerprint_every = 5
deterministic = true
device = "cpu"
threads = 1
"""

IMAGE_NET = '''
import torch.nn.functional as F
from torch import nn


class Net32(nn.Module):
    """A CNN for 3x32x32 images (the CIFAR-10 tutorial's shape), narrowed."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 4, 5)
        self.conv2 = nn.Conv2d(4, 8, 5)
        self.fc = nn.Linear(8 * 5 * 5, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 32 -> 28 -> 14
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 14 -> 10 -> 5
        return self.fc(x.flatten(1))
'''

IMAGE_RECIPE = """
model = "cifar_net:Net32"
data = "imagefolder:{path}"
image_size = 32
epochs = 2
batch_size = 16
optimizer = {{name = "AdamW", lr = 0.002, weight_decay = 0.05}}
lr_schedule = "cosine"
augment = {{random_crop = 4, horizontal_flip = true}}
normalize = {{mean = [0.5, 0.5, 0.5], std = [0.25, 0.25, 0.25]}}
checkpoint_every = 3
deterministic = true
device = "cpu"
threads = 1
"""


def _kill_and_resume(project: Path, config: str, *, kill_after: int) -> tuple[Path, Path]:
    """Train ``config`` uninterrupted (``ref``) and again with a SIGKILL once a checkpoint at
    step >= ``kill_after`` exists, then resume; returns (ref, run)."""
    env = _env()
    ref, run = project / "ref", project / "run"
    done = subprocess.run(
        _cmd("train", "-c", config, "-q", "--out", str(ref)),
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(
        _cmd("train", "-c", config, "-q", "--out", str(run)),
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = _kill_when(proc, lambda: any(s >= kill_after for s in _ckpt_steps(run)), delay=0.0)
    assert killed, "the run finished before it could be killed"
    resumed = subprocess.run(
        _cmd("train", "--resume", str(run), "-q"),
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stderr
    return ref, run


def _repro_identical(project: Path, config: str) -> dict:
    """`modelkit repro CONFIG`: two fresh-process runs of the recipe, compared bitwise."""
    done = subprocess.run(
        _cmd("repro", config, "-f", "json"), cwd=project, env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["identical"], report
    return report


def test_adadelta_steplr_nll_recipe_from_a_config_file_resumes_bitwise(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(MNIST_NET)
    (tmp_path / "recipe.toml").write_text(MNIST_RECIPE)
    ref, run = _kill_and_resume(tmp_path, "recipe.toml", kill_after=8)

    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete" and record["steps"] == 30  # max_steps, mid-epoch
    assert record["resumes"][0]["from_step"] >= 8
    assert sha256_file(run / "model.safetensors") == sha256_file(ref / "model.safetensors")
    assert _comparable_metrics(run) == _comparable_metrics(ref)
    # the recipe as built, recorded in the run
    recipe = record["recipe"]
    assert recipe["optimizer"] == {"name": "Adadelta", "lr": 1.0, "weight_decay": 0.0}
    assert recipe["lr_schedule"] == {
        "name": "StepLR",
        "interval": "epoch",
        "step_size": 1,
        "gamma": 0.7,
    }
    assert recipe["loss"] == {"name": "nll"} and record["data"]["normalize"]["std"] == [0.3081]
    train_cfg = json.loads((run / "config.json").read_text())["modelkit"]["train"]
    assert (
        train_cfg["optimizer"] == {"name": "Adadelta", "lr": 1.0} and train_cfg["max_steps"] == 30
    )
    # StepLR per epoch: epoch 1 at lr 1.0, epoch 2 at 0.7
    lrs = {
        r["epoch"]: r["lr"] for r in map(json.loads, (run / "metrics.jsonl").open()) if "lr" in r
    }
    assert lrs[1] == 1.0 and lrs[2] == pytest.approx(0.7)
    # keep_best: the best epoch's weights, identical in both runs
    best = record["best"]
    assert best["metric"] == "test_accuracy" and best["epoch"] in (1, 2)
    assert sha256_file(run / "best.safetensors") == best["weights_sha256"]
    assert sha256_file(ref / "best.safetensors") == best["weights_sha256"]
    assert record["metrics"]["test_accuracy"] > 0.5
    _repro_identical(tmp_path, "recipe.toml")


def test_32px_image_folder_with_crop_and_flip_resumes_bitwise(
    tmp_path: Path, catsdogs_dir: Path
) -> None:
    (tmp_path / "cifar_net.py").write_text(IMAGE_NET)
    (tmp_path / "recipe.toml").write_text(IMAGE_RECIPE.format(path=catsdogs_dir.as_posix()))
    ref, run = _kill_and_resume(tmp_path, "recipe.toml", kill_after=6)

    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete"
    assert record["data"]["input_shape"] == [3, 32, 32]
    assert record["recipe"]["augment"] == {
        "random_crop": 4,
        "horizontal_flip": 0.5,
        "vertical_flip": 0.0,
        "padding_mode": "constant",
    }
    assert record["recipe"]["optimizer"]["name"] == "AdamW"
    assert sha256_file(run / "model.safetensors") == sha256_file(ref / "model.safetensors")
    assert _comparable_metrics(run) == _comparable_metrics(ref)
    _repro_identical(tmp_path, "recipe.toml")


def test_recipe_errors_are_one_line_exit_2(cli, in_tmp: Path) -> None:
    cfg = in_tmp / "bad.toml"
    for text, needle in [
        ('optimizer = "adadelt"\n', "did you mean 'Adadelta'"),
        ('optimizer = {name = "Adam", lr_gamma = 0.7}\n', "takes no argument 'lr_gamma'"),
        ('loss = "nl"\n', "did you mean 'nll'"),
        ("augment = {crop = 4}\n", "did you mean 'random_crop'"),
        ('keep_best = "accuracy"\n', "did you mean 'test_accuracy'"),
    ]:
        cfg.write_text(text)
        code, _, err = cli("train", "-c", cfg, "-q")
        assert code == 2, (text, err)
        assert needle in err and "hint:" in err and "Traceback" not in err, (text, err)


def test_cli_recipe_flags(cli, in_tmp: Path) -> None:
    code, out, err = cli(
        "train",
        "--optimizer",
        "RMSprop",
        "--lr",
        "0.001",
        "--max-steps",
        "3",
        "--loss",
        "cross_entropy",
        "--lr-schedule",
        "CosineAnnealingLR",
        "--grad-clip",
        "1.0",
        "--keep-best",
        "test_loss",
        "--out",
        "r",
        "-q",
        "--format",
        "json",
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["steps"] == 3 and record["recipe"]["optimizer"]["name"] == "RMSprop"
    assert record["recipe"]["loss"] == {"name": "cross_entropy"}
    assert record["recipe"]["lr_schedule"] == {"name": "CosineAnnealingLR", "interval": "step"}
    assert record["best"]["metric"] == "test_loss" and (in_tmp / "r/best.safetensors").is_file()
    train_cfg = json.loads((in_tmp / "r/config.json").read_text())["modelkit"]["train"]
    assert train_cfg["grad_clip"] == 1.0 and train_cfg["keep_best"] == "test_loss"
    # eval normalises like training did (the mnist-mlp defaults normalise): same accuracy
    code, out, err = cli("eval", "r", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == record["metrics"]["test_accuracy"]
    code, _, err = cli("train", "--optimizer", "adamm", "-q", "--out", "s")
    assert code == 2 and "did you mean 'Adam'" in err


def test_data_reference_without_a_dot(cli, in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_recipes import LOADER

    (in_tmp / "my_data.py").write_text(LOADER)
    (in_tmp / "tiny.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def tiny(num_classes: int = 2):
                return nn.Sequential(nn.Flatten(), nn.Linear(16, num_classes))
            """
        )
    )
    monkeypatch.syspath_prepend(str(in_tmp))
    code, out, err = cli(
        "train", "--model", "tiny:tiny", "--data", "my_data:load", "--epochs", "1", "-q",
        "--out", "r", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["data"]["train_size"] == 20


def test_mixed_precision_step_takes_the_recipe_too(in_tmp: Path) -> None:
    """The general step (autocast; DDP, host batches and fp16 share it) augments, clips and
    uses the configured loss like the fast path."""
    from modelkit.config import TrainConfig
    from modelkit.training.loop import train

    cfg = TrainConfig(
        model="small-cnn",
        model_kwargs={"channels": [4, 8], "hidden": 16},
        data="digits",
        epochs=1,
        max_steps=4,
        batch_size=32,
        precision="bf16",
        device="cpu",
        augment={"random_crop": 2, "horizontal_flip": True},
        grad_clip=0.5,
        loss={"name": "cross_entropy", "label_smoothing": 0.2},
        keep_best="test_loss",
        deterministic=True,
        threads=1,
    )
    record = train(cfg, out=in_tmp / "r")
    assert record["status"] == "complete" and record["steps"] == 4
    assert record["accel"]["precision"] == "bf16" and record["best"]["step"] == 4
    again = train(cfg, out=in_tmp / "r2")
    assert again["weights_sha256"] == record["weights_sha256"]
