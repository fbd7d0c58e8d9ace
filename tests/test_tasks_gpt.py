"""gpt-tiny end to end (issue 19): train on the bundled text, eval, card, release to a local
registry, verify --eval -- with a model and a step budget small enough for a test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

CONFIG = """
model = "gpt-tiny"
max_steps = 60
batch_size = 16
context_length = 32
lr = 1e-2
device = "cpu"
keep_best = "test_perplexity"
lr_schedule = {name = "CosineAnnealingLR", warmup_steps = 5}

[model_kwargs]
n_embd = 32
n_layer = 1
n_head = 2
"""


def unigram_perplexity(ds) -> float:
    """The held-out perplexity of the training text's byte frequencies (add-one smoothed)."""
    import torch

    counts = torch.bincount(ds.y_train.flatten(), minlength=ds.vocab_size).double() + 1
    p = counts / counts.sum()
    return math.exp(float(-torch.log(p[ds.y_test.flatten()]).mean()))


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained gpt-tiny run (60 steps of 16 windows of 32 bytes), shared by the tests."""
    from typer.testing import CliRunner

    from modelkit.cli.app import app

    root = tmp_path_factory.mktemp("gpt")
    (root / "c.toml").write_text(CONFIG)
    result = CliRunner().invoke(
        app, ["train", "--config", str(root / "c.toml"), "--out", str(root / "run"), "-q"]
    )
    assert result.exit_code == 0, result.stderr
    return root / "run"


@pytest.mark.slow
def test_train_records_the_task_and_tokens(gpt_run: Path) -> None:
    from modelkit.data.text import load_pystdlib

    record = json.loads((gpt_run / "run.json").read_text())
    assert record["task"] == "language-modeling"
    assert record["data"]["spec"] == "pystdlib" and record["data"]["context_length"] == 32
    assert record["data"]["tokenizer"] == "byte" and record["data"]["vocab_size"] == 256
    assert record["tokens_seen"] == 60 * 16 * 32 and record["tokens_per_second"] > 0
    m = record["metrics"]
    assert set(m) >= {"test_perplexity", "test_loss", "test_bits_per_byte", "train_loss"}
    assert "test_accuracy" not in m
    assert m["test_perplexity"] == pytest.approx(math.exp(m["test_loss"]))
    # below the text's unigram perplexity (~24) after 60 small steps (19.2; the default recipe: docs)
    unigram = unigram_perplexity(load_pystdlib(context_length=32))
    assert m["test_perplexity"] < 0.85 * unigram, (m, unigram)
    assert record["best"]["metric"] == "test_perplexity"  # kept in the metric's direction
    rows = [json.loads(r) for r in (gpt_run / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in rows if r["kind"] == "epoch"][-1]
    assert epoch["test_perplexity"] == m["test_perplexity"]


@pytest.mark.slow
def test_eval_card_release_verify(gpt_run: Path, cli, in_tmp: Path) -> None:
    import subprocess

    # the project releasing it: a license for the card, a commit for the release to record
    (in_tmp / "pyproject.toml").write_text('[project]\nname = "gpt"\nlicense = "MIT"\n')
    (in_tmp / ".gitignore").write_text("registry/\n")
    ident = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(in_tmp)], check=True)
    subprocess.run(["git", "-C", str(in_tmp), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(in_tmp), *ident, "commit", "-qm", "x"], check=True)
    code, out, err = cli("eval", gpt_run, "--format", "json")
    assert code == 0, err
    ev = json.loads(out)
    record = json.loads((gpt_run / "run.json").read_text())
    assert ev["task"] == "language-modeling" and ev["data"]["same_as_training"]
    assert ev["perplexity"] == pytest.approx(record["metrics"]["test_perplexity"], rel=1e-6)
    assert ev["tokens"] == record["data"]["test_tokens"]
    code, out, err = cli("eval", gpt_run)
    assert code == 0 and "perplexity" in out.lower()
    assert "per-class" not in out and "confusion" not in out

    code, _, err = cli("card", gpt_run)
    assert code == 0, err
    card = (gpt_run / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["pipeline_tag"] == "text-generation" and "text-generation" in meta["tags"]
    results = meta["model-index"][0]["results"][0]
    assert results["task"]["type"] == "text-generation"
    assert {m["type"] for m in results["metrics"]} >= {"perplexity", "loss"}
    for needle in ("Context length:** 32 tokens", "Vocabulary:** 256 tokens", "tokens/s"):
        assert needle in card, needle
    body = card.lower()
    assert "accuracy" not in body and "classification" not in body and "unknown" not in body
    from huggingface_hub import ModelCard

    assert ModelCard(card, ignore_metadata_errors=False).data.pipeline_tag == "text-generation"

    code, out, err = cli(
        "release", "v1.0", "--run", gpt_run, "--to", in_tmp / "registry",
        "--repo", "local/gpt-tiny", "--allow-incomplete-card",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = cli(
        "verify", f"{in_tmp / 'registry'}@v1.0", "--repo", "local/gpt-tiny", "--eval"
    )
    assert code == 0, err
    assert "re-evaluated perplexity" in out + err


@pytest.mark.slow
def test_lm_run_refuses_image_data_honestly(gpt_run: Path, cli) -> None:
    code, _, err = cli("eval", gpt_run, "--data", "digits")
    assert code == 2
    assert "does not fit the model: it is classification data" in err
    assert "Traceback" not in err and "unexpected" not in err


def test_gpt_tiny_refuses_image_data(cli, in_tmp: Path) -> None:
    code, _, err = cli("train", "--model", "gpt-tiny", "--data", "digits", "--out", "r")
    assert code == 2
    assert "language-modeling model" in err and "classification data" in err
