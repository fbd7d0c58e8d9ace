"""Shared fixtures: real data paths (skip with a reason when absent), a CLI runner, temp projects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """../shared/data, or $MODELKIT_SHARED_DATA."""
    return Path(os.environ.get("MODELKIT_SHARED_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    p = shared_data() / "mnist"
    if not (p / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {p} (set MODELKIT_SHARED_DATA)")
    return p


@pytest.fixture(scope="session")
def catsdogs_dir() -> Path:
    p = shared_data() / "catsdogs"
    if not (p / "cats").is_dir():
        pytest.skip(f"cats-vs-dogs photos not found at {p} (set MODELKIT_SHARED_DATA)")
    return p


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty temp dir (no pyproject above it picks up [tool.modelkit])."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def cli():
    """Invoke the CLI in-process; returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from modelkit.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, [str(a) for a in args])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mnist-mlp run on digits (1 epoch), evaluated and carded once per session."""
    from modelkit.card import write_card
    from modelkit.config import resolve_config
    from modelkit.project import Project
    from modelkit.training.evaluate import evaluate_run
    from modelkit.training.loop import train

    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = resolve_config(config_file=None, overrides={"epochs": 1}, project=Project())
    train(cfg, out=out, project=Project())
    evaluate_run(out, project=Project(), device="cpu")
    write_card(out, project=Project())
    return out
