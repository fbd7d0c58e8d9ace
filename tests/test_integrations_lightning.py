"""ModelkitCallback for Lightning, with a real LightningModule on scikit-learn's digits
(tests/frameworks/lit_digits.py): the run it records, loading it elsewhere (modelkit.load and
the card's plain snippet, LitMLP(**hparams) + load_state_dict), SIGKILL + fit(ckpt_path=)
bitwise, repro and --control."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning", reason="the lightning extra is not installed")

SCRIPT = Path(__file__).parent / "frameworks" / "lit_digits.py"
pytestmark = pytest.mark.slow  # each test starts Lightning in a fresh process (~10-40 s)


def _run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "lit_digits.py", *args], cwd=cwd, capture_output=True, text=True
    )
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script run once, uninterrupted, in a folder without a pyproject.toml."""
    cwd = tmp_path_factory.mktemp("lit")
    shutil.copy(SCRIPT, cwd / "lit_digits.py")
    _run(cwd, "--out", "ckA")
    return cwd


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_script_adopts_modelkit_in_at_most_three_lines() -> None:
    added = [line for line in SCRIPT.read_text().splitlines() if line.endswith("# modelkit")]
    assert 0 < len(added) <= 3, added


def test_the_fit_is_recorded(trained: Path) -> None:
    run = trained / "runs/lit"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete" and record["steps"] == 45  # 3 epochs x 15 batches
    assert record["config"] == {"hidden": 32, "lr": 0.01}
    assert record["reference"]["ref"] == "lit_digits:LitMLP"
    assert record["reference"]["kwargs"] == {"hidden": 32, "lr": 0.01}
    assert record["determinism"]["seed"] == 0
    assert record["data"]["size"] == 1500 and record["data"]["fingerprint"] != "unknown"
    assert 0.5 < record["metrics"]["val_acc"] <= 1.0
    rows = _rows(run)
    assert [r["step"] for r in rows if r["kind"] == "step"] == list(range(1, 46))
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [0, 1, 2]
    assert [r["step"] for r in rows if r["kind"] == "fingerprint"] == list(range(5, 46, 5))


def test_the_run_loads_elsewhere_and_with_the_plain_snippet(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import modelkit
    from modelkit.weights import loading_snippet, read_layout

    run = trained / "runs/lit"
    monkeypatch.chdir(tmp_path)  # another folder: the script's folder comes from run.json
    model = modelkit.load(run)
    x = torch.linspace(0, 1, 3 * 64).reshape(3, 64)
    record = json.loads((run / "run.json").read_text())["reference"]
    snippet = loading_snippet(
        read_layout(run), reference=record["ref"], kwargs=record["kwargs"], folder=repr(str(run))
    )
    snippet += "import torch\nprint(model(torch.linspace(0, 1, 192).reshape(3, 64)).tolist())\n"
    r = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=trained,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    with torch.no_grad():
        assert json.loads(r.stdout) == model(x).tolist()


def test_sigkill_then_fit_ckpt_path_is_bitwise(trained: Path) -> None:
    shutil.move(trained / "runs/lit", trained / "runA")
    try:
        killed = _run(trained, "--out", "ckB", "--kill-at", "20", check=False)
        assert killed.returncode == -9, killed.stderr[-2000:]
        _run(trained, "--out", "ckB", "--ckpt", "ckB/epoch=0-step=15.ckpt")
        a, b = trained / "runA", trained / "runs/lit"
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
        assert _rows(a) == _rows(b)
        resume = json.loads((b / "run.json").read_text())["resumes"][-1]
        assert resume["from_step"] == 15 and resume["bitwise"] is True
    finally:
        shutil.rmtree(trained / "runs/lit", ignore_errors=True)
        shutil.move(trained / "runA", trained / "runs/lit")


def test_repro_identical_and_control_differs(trained: Path, cli, monkeypatch) -> None:
    monkeypatch.chdir(trained)
    code, out, err = cli(
        "repro", "--control", "-f", "json", "--", sys.executable, "lit_digits.py", "--epochs", "1"
    )
    assert code == 0, err
    r = json.loads(out)
    assert r["identical"] and r["weights_sha256"]["a"] == r["weights_sha256"]["b"]
    assert r["fingerprints_compared"] == 3  # steps 5, 10, 15
    c = r["control"]  # MODELKIT_SEED=1 reached lightning's seed_everything: another data order
    assert c["differs"] and c["seed"] == 1


def test_released_to_a_registry_it_loads_as_litmodule_hparams_and_verifies_elsewhere(
    trained: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from release_helpers import git_project
    from safetensors.torch import load_file

    import modelkit
    from modelkit.loading import resolve_directory

    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(trained / "lit_digits.py", root / "lit_digits.py")
    git_project(root)
    shutil.copytree(trained / "runs/lit", root / "runs/lit")
    monkeypatch.chdir(root)
    code, _, err = cli("eval", "runs/lit", "--data", "digits")  # through the eval_transform
    assert code == 0, err
    assert cli("card", "runs/lit")[0] == 0
    code, _, err = cli(
        "release", "v0.1", "--run", "runs/lit", "--to", "registry", "--repo", "o/lit"
    )
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    registry = root / "registry"
    code, _, err = cli("verify", f"{registry}@v0.1", "--repo", "o/lit")
    assert code == 0, err
    # the framework's own way: LitModule(**hparams) + load_state_dict, from the released files
    snap = resolve_directory(registry, "v0.1", repo="o/lit")
    hparams = json.loads((snap / "config.json").read_text())["modelkit"]["reference"]["kwargs"]
    sys.path.insert(0, str(root))
    try:
        from lit_digits import LitMLP

        lit = LitMLP(**hparams)
        lit.load_state_dict(load_file(snap / "model.safetensors"))
    finally:
        sys.path.remove(str(root))
    x = torch.linspace(0, 1, 5 * 64).reshape(5, 64)
    with torch.no_grad():
        assert torch.equal(lit.eval()(x), modelkit.load(trained / "runs/lit")(x))
