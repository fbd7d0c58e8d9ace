"""ModelkitCallback for transformers.Trainer, with a real tiny GPT-2 and a tokenizer trained
locally (tests/frameworks/hf_clm.py, a run_clm-style script): the run it records, the
framework's own loaders on it, SIGKILL + resume_from_checkpoint bitwise, repro and --control."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the transformers extra is not installed")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

SCRIPT = Path(__file__).parent / "frameworks" / "hf_clm.py"
pytestmark = pytest.mark.slow  # each test starts transformers in a fresh process (~5-30 s)


def _run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "hf_clm.py", *args], cwd=cwd, capture_output=True, text=True
    )
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def _script_module(cwd: Path):
    spec = importlib.util.spec_from_file_location("hf_clm_under_test", cwd / "hf_clm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script run once, uninterrupted, in a folder without a pyproject.toml."""
    cwd = tmp_path_factory.mktemp("clm")
    shutil.copy(SCRIPT, cwd / "hf_clm.py")
    _run(cwd, "--out", "outA")
    return cwd


def test_the_script_adopts_modelkit_in_at_most_three_lines() -> None:
    added = [line for line in SCRIPT.read_text().splitlines() if line.endswith("# modelkit")]
    assert 0 < len(added) <= 3, added


def test_the_trainer_run_is_recorded(trained: Path) -> None:
    run = trained / "runs/clm"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete" and record["steps"] == 8
    assert record["config"]["learning_rate"] == 3e-3 and "output_dir" not in record["config"]
    assert record["determinism"]["seed"] == 0 and "Trainer" in record["determinism"]["seeded"]
    assert record["task"] == "language-modeling"
    assert record["data"]["name"] == "Blocks" and record["data"]["fingerprint"].startswith(
        "sha256:"
    )
    ref = record["reference"]
    assert ref["ref"] == "transformers.models.gpt2.modeling_gpt2:GPT2LMHeadModel"
    assert ref["configs"]["config"]["kind"] == "transformers"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all(r["loss"] > 0 and "learning_rate" in r for r in steps)
    assert [r["step"] for r in rows if r["kind"] == "fingerprint"] == [2, 4, 6, 8]
    artifacts = {a["name"] for a in record["artifacts"]}  # declared: a release carries them
    assert {"tokenizer.json", "tokenizer_config.json"} <= artifacts
    assert artifacts == {p.name for p in (run / "artifacts").iterdir()}


def test_the_run_loads_with_transformers_and_modelkit(trained: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import modelkit

    run = trained / "runs/clm"
    script = _script_module(trained)
    text = "the quick brown fox predicts the next token"
    ids = script.build_tokenizer()(text)["input_ids"]
    tokenizer = AutoTokenizer.from_pretrained(run / "artifacts")
    assert tokenizer(text)["input_ids"] == ids and len(ids) > 3
    x = torch.tensor([ids[:16]])
    hf = AutoModelForCausalLM.from_pretrained(run).eval()
    mk = modelkit.load(run)
    assert type(mk).__name__ == "GPT2LMHeadModel"
    assert mk.lm_head.weight is mk.transformer.wte.weight  # tied again
    with torch.no_grad():
        assert torch.equal(hf(x).logits, mk(x).logits)


def test_sigkill_then_resume_from_checkpoint_is_bitwise(trained: Path) -> None:
    shutil.move(trained / "runs/clm", trained / "runA")
    try:
        killed = _run(trained, "--out", "outB", "--kill-at", "7", check=False)
        assert killed.returncode == -9, killed.stderr[-2000:]
        rows = (trained / "runs/.clm.partial/metrics.jsonl").read_text().splitlines()
        assert max(json.loads(r)["step"] for r in rows) == 6  # flushed at checkpoint-6
        _run(trained, "--out", "outB", "--resume", "outB/checkpoint-4")
        a, b = trained / "runA", trained / "runs/clm"
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
        assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
        record = json.loads((b / "run.json").read_text())
        assert record["resumes"][-1]["from_step"] == 4
        assert record["resumes"][-1]["checkpoint"] == "outB/checkpoint-4"
    finally:
        shutil.rmtree(trained / "runs/clm", ignore_errors=True)
        shutil.move(trained / "runA", trained / "runs/clm")


def test_repro_identical_and_control_differs(trained: Path, cli, monkeypatch) -> None:
    monkeypatch.chdir(trained)
    code, out, err = cli("repro", "--control", "-f", "json", "--", sys.executable, "hf_clm.py")
    assert code == 0, err
    r = json.loads(out)
    assert r["identical"] and r["weights_sha256"]["a"] == r["weights_sha256"]["b"]
    assert r["fingerprints_compared"] == 4
    c = r["control"]  # MODELKIT_SEED=1 reached the Trainer's seed: another data order
    assert c["differs"] and c["seed"] == 1


def test_released_to_a_registry_it_loads_with_transformers_and_verifies_elsewhere(
    trained: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from release_helpers import git_project
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import modelkit

    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(trained / "hf_clm.py", root / "hf_clm.py")
    git_project(root)
    shutil.copytree(trained / "runs/clm", root / "runs/clm")
    monkeypatch.chdir(root)
    assert cli("eval", "runs/clm", "--data", "hf_clm:eval_windows")[0] == 0
    assert json.loads((root / "runs/clm/run.json").read_text())["task"] == "language-modeling"
    code, _, err = cli("card", "runs/clm")
    assert code == 0, err
    code, out, err = cli(
        "release", "v0.1", "--run", "runs/clm", "--to", "registry", "--repo", "org/clm"
    )
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    registry = root / "registry"
    code, _, err = cli("verify", f"{registry}@v0.1", "--repo", "org/clm")
    assert code == 0, err
    from modelkit.loading import resolve_directory

    card = (resolve_directory(registry, "v0.1", repo="org/clm") / "README.md").read_text()
    assert "Or with transformers' own loader:" in card
    assert "model = GPT2LMHeadModel.from_pretrained(folder)" in card
    where = {"revision": "v0.1", "cache_dir": str(registry), "local_files_only": True}
    hf = AutoModelForCausalLM.from_pretrained("org/clm", **where).eval()
    tokenizer = AutoTokenizer.from_pretrained("org/clm", **where)
    text = "a model card says what the tokenizer splits"
    ids = _script_module(trained).build_tokenizer()(text)["input_ids"]
    assert tokenizer(text)["input_ids"] == ids and len(ids) > 3
    trained_model = modelkit.load(trained / "runs/clm")
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(hf(x).logits, trained_model(x).logits)
