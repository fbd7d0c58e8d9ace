"""A maintainer's own repo: models, datasets and defaults declared in its pyproject.toml."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

PYPROJECT = """
[project]
name = "tinyproj"
version = "0.0.1"
license = "MIT"

[tool.modelkit]
run = "runs/main"

[tool.modelkit.models]
tiny-net = "tinyproj.models:tiny_net"

[tool.modelkit.datasets]
blobs = "tinyproj.data:load_blobs"

[tool.modelkit.defaults]
model = "tiny-net"
data = "blobs"
epochs = 20
lr = 0.01
"""

MODELS = '''
"""A two-layer net for 1x4x4 inputs."""
from torch import nn

class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.ReLU(), nn.Linear(width, num_classes))
    def forward(self, x):
        return self.net(x)

def tiny_net(num_classes: int = 3, width: int = 16) -> TinyNet:
    return TinyNet(num_classes, width)
'''

DATA = '''
"""Three well-separated Gaussian blobs as 1x4x4 'images'."""
import torch
from modelkit.data.base import Dataset, fingerprint_tensors

def load_blobs() -> Dataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(600) % 3
    x = torch.randn(600, 1, 4, 4, generator=g) * 0.3 + y.view(-1, 1, 1, 1).float()
    return Dataset(spec="blobs", x_train=x[:480], y_train=y[:480], x_test=x[480:], y_test=y[480:],
                   classes=["a", "b", "c"], fingerprint=fingerprint_tensors(x, y, extra="blobs"))
'''


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tinyproj-repo"
    pkg = root / "src" / "tinyproj"
    pkg.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent(MODELS))
    (pkg / "data.py").write_text(textwrap.dedent(DATA))
    monkeypatch.chdir(root)
    yield root
    import sys

    for name in [m for m in sys.modules if m.startswith("tinyproj")]:
        del sys.modules[name]


def test_models_lists_project_models(cli, project: Path) -> None:
    code, out, _ = cli("models", "--format", "json")
    data = json.loads(out)
    assert data["models"]["tiny-net"]["source"] == "pyproject" and "blobs" in data["data"]


def test_train_and_eval_with_project_defaults(cli, project: Path) -> None:
    code, _, err = cli("train", "-q", "--out", "runs/main")
    assert code == 0, err
    cfg = json.loads((project / "runs/main/config.json").read_text())
    assert cfg["modelkit"]["model"] == "tiny-net" and cfg["modelkit"]["train"]["epochs"] == 20
    assert cfg["num_classes"] == 3  # filled from the data
    code, out, _ = cli("eval", "runs/main", "--format", "json")
    assert code == 0 and json.loads(out)["accuracy"] > 0.9
    assert json.loads(out)["classes"] == ["a", "b", "c"]


def test_module_factory_spec_works_directly(cli, project: Path) -> None:
    code, _, err = cli(
        "train",
        "-q",
        "-m",
        "tinyproj.models:tiny_net",
        "-d",
        "tinyproj.data:load_blobs",
        "--epochs",
        "1",
        "--out",
        "runs/direct",
    )
    assert code == 0, err
    from modelkit.models.weights import load_model_from_dir

    model, _ = load_model_from_dir(project / "runs/direct")
    assert model(torch.zeros(2, 1, 4, 4)).shape == (2, 3)


def test_bad_project_model_reference(cli, project: Path) -> None:
    py = project / "pyproject.toml"
    py.write_text(py.read_text().replace("tinyproj.models:tiny_net", "tinyproj.models:nope"))
    code, _, err = cli("train", "-q", "--out", "runs/x")
    assert code == 2 and "has no attribute 'nope'" in err


def test_user_model_through_card_release_verify(cli, project: Path) -> None:
    import subprocess

    (project / ".gitignore").write_text("runs/\nregistry/\n__pycache__/\n")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=project, check=True)
    assert cli("train", "-q", "--out", "runs/main")[0] == 0
    assert cli("eval", "runs/main")[0] == 0
    code, _, err = cli("card", "runs/main")
    assert code == 0, err
    card = (project / "runs/main/README.md").read_text()
    assert "tiny-net" in card and "blobs" in card
    code, _, err = cli(
        "release", "v0.1.0", "--to", "registry", "--repo", "me/tiny", "--allow-incomplete-card"
    )
    assert code == 0, err
    code, _, err = cli("verify", "registry@v0.1.0", "--eval")
    assert code == 0, err
