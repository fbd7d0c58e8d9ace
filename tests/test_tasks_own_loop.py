"""A nanoGPT-style script adopted with ``start_run(task="language-modeling")`` (issue 19):
``eval --data`` with a token-window loader, card, release, verify --eval. The card's loss is
the full-position loss of the released weights, and no classification wording appears."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent / "own_loop"
ROOT = Path(__file__).resolve().parents[1]
LOADER = '''"""Held-out token windows of input.txt, as the script splits and encodes it."""
import torch
from torch.utils.data import DataLoader, TensorDataset


def load(block_size=32):
    with open("input.txt", encoding="utf-8") as f:
        text = f.read()
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    val = data[int(0.9 * len(data)) :]
    n = (len(val) - 1) // block_size
    x = val[: n * block_size].view(n, block_size)
    y = val[1 : n * block_size + 1].view(n, block_size)
    return DataLoader(TensorDataset(x, y), batch_size=64)
'''
WORDS = re.compile(r"accuracy|classif|\bclasses\b|per-class|confusion|image", re.IGNORECASE)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's repository with the adopted script, trained once (60 iterations)."""
    from modelkit.data.text import CORPUS

    root = tmp_path_factory.mktemp("nanogpt")
    shutil.copy(HERE / "nanogpt_char.py", root)
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        (root / "input.txt").write_text(f.read()[:60_000])
    (root / "val_windows.py").write_text(LOADER)
    (root / "pyproject.toml").write_text('[project]\nname = "nanogpt"\nlicense = "MIT"\n')
    (root / ".gitignore").write_text("runs/\nregistry/\n__pycache__/\n")
    ident = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), *ident, "commit", "-qm", "gpt"], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(root)])}
    proc = subprocess.run(
        [sys.executable, "nanogpt_char.py"], cwd=root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture()
def at_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    return project


def full_position_loss(run: Path) -> float:
    """Token-weighted cross-entropy of the run's weights over every position of the windows."""
    import torch
    import torch.nn.functional as F
    import val_windows

    from modelkit.models.weights import load_model_from_dir

    model, _ = load_model_from_dir(run)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in val_windows.load():
            logits, _ = model(x, y)
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            count += y.numel()
    return total / count


@pytest.mark.slow
def test_adopted_gpt_script_eval_card_release_verify(at_project: Path, cli) -> None:
    run = at_project / "runs" / "gpt"
    record = json.loads((run / "run.json").read_text())
    assert record["task"] == "language-modeling" and record["trainer"] == "user"

    code, out, err = cli("eval", "runs/gpt", "--data", "val_windows:load", "--format", "json")
    assert code == 0, err
    ev = json.loads(out)
    expected = full_position_loss(run)
    assert ev["loss"] == pytest.approx(expected, rel=1e-6)  # every position, not the last one
    assert ev["tokens"] > 5_000 and ev["data"]["fingerprint"].startswith("sha256:")
    code, out, err = cli("eval", "runs/gpt", "--data", "val_windows:load")
    assert code == 0, err
    assert not WORDS.search(out + err), out + err

    code, _, err = cli("card", "runs/gpt")
    assert code == 0, err  # free-form log_epoch metrics (val_loss, train_loss) render
    card = (run / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["pipeline_tag"] == "text-generation"
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["loss"] == pytest.approx(expected, abs=1e-6)
    assert "Reported by the training script" in card and "val_loss" in card
    assert "Context length:** 32 tokens" in card  # from the model's block_size
    assert "trained with" in card and "on `unknown`" not in card
    assert not WORDS.search(card), WORDS.search(card)

    code, out, err = cli(
        "release", "v1.0", "--run", "runs/gpt", "--to", "registry", "--repo", "local/nanogpt",
        "--allow-incomplete-card",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = cli("verify", "registry@v1.0", "--repo", "local/nanogpt", "--eval")
    assert code == 0, err
    assert "re-evaluated perplexity" in out + err
