"""A sharded model with tied weights, end to end: recorded through start_run, evaluated, carded,
released to a local registry, verified from another directory, loaded with modelkit.load and
with the card's plain-PyTorch snippet; damaged, missing and extra shards refused by name."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from release_helpers import git_project
from test_weights import SHARD, TIED_MODULE

import modelkit
from modelkit.weights import INDEX, read_layout

REPO = "org/tied"


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed project defining ``tiedmodel.TiedNet``, with one sharded run recorded."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "tiedmodel.py").write_text(TIED_MODULE)
    git_project(root)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    sys.modules.pop("tiedmodel", None)
    import tiedmodel

    torch.manual_seed(0)
    model = tiedmodel.TiedNet()
    with modelkit.start_run("runs/tied", model=model, seed=0) as run:
        run.finish(model, metrics={"accuracy": 0.1}, max_shard_size=SHARD)
    return root


def _x() -> torch.Tensor:
    return torch.linspace(0, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)


def _shard(directory: Path, k: int) -> Path:
    n = len(read_layout(directory).headers)
    return directory / f"model-{k:05d}-of-{n:05d}.safetensors"


def _plain_snippet(card: str) -> str:
    return re.search(r"Or with plain PyTorch:\n\n```python\n(.*?)```", card, re.S).group(1)


def test_sharded_tied_run_cards_releases_verifies_and_loads(
    cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tiedmodel

    run = project / "runs/tied"
    layout = read_layout(run)
    assert layout.kind == "sharded" and len(layout.headers) >= 3
    record = json.loads((run / "run.json").read_text())
    assert set(record["weights"]["files"]) == set(layout.files)
    assert record["weights"]["shared_tensors"] == {"b.weight": "a.weight"}
    assert cli("eval", run, "--data", "digits")[0] == 0
    code, _, err = cli("card", run)
    assert code == 0, err
    card = (run / "README.md").read_text()
    assert f"{len(layout.headers)} shards" in card and INDEX in card
    code, out, err = cli(
        "release", "v1.0", "--run", run, "--to", "registry", "--repo", REPO, "-f", "json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert set(layout.files) <= {f["path"] for f in report["files"]}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    registry = project / "registry"
    code, out, err = cli("verify", f"{registry}@v1.0", "--repo", REPO, "--eval", "-f", "json")
    assert code == 0, err
    assert any(f"{len(layout.headers)} shards" in c for c in json.loads(out)["checks"])
    loaded = modelkit.load(registry, "v1.0", repo=REPO)
    assert loaded.b.weight is loaded.a.weight
    torch.manual_seed(0)
    assert torch.equal(loaded(_x()), tiedmodel.TiedNet()(_x()))
    # the released card's plain load_state_dict snippet runs as written (offline)
    snap = registry / "models--org--tied/snapshots" / report["commit"]
    script = _plain_snippet((snap / "README.md").read_text())
    script += (
        "import torch\nprint(model(torch.linspace(0, 1, 1568).reshape(2, 1, 28, 28)).tolist())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(project), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == loaded(_x()).tolist()
    # a shard changed in the registry: verify fails naming it
    blob = _shard(snap, 2).resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    code, _, err = cli("verify", f"{registry}@v1.0", "--repo", REPO)
    assert code == 3 and _shard(snap, 2).name in err


def test_damaged_missing_and_extra_shards_are_refused_by_name(cli, project: Path) -> None:
    run = project / "runs/tied"
    corrupt, missing, extra = (project / "runs" / n for n in ("corrupt", "missing", "extra"))
    for d in (corrupt, missing, extra):
        shutil.copytree(run, d)
    data = bytearray(_shard(corrupt, 2).read_bytes())
    data[-1] ^= 1
    _shard(corrupt, 2).write_bytes(bytes(data))
    code, _, err = cli("eval", corrupt, "--data", "digits")
    assert code == 3 and _shard(corrupt, 2).name in err and "does not match run.json" in err
    name = _shard(missing, 2).name
    _shard(missing, 2).unlink()
    code, _, err = cli("eval", missing, "--data", "digits")
    assert code == 2 and name in err and "missing" in err
    (extra / "model-00009-of-00009.safetensors").write_bytes(b"stray")
    code, _, err = cli("card", extra)
    assert code == 2 and "model-00009-of-00009.safetensors" in err
    with pytest.raises(modelkit.errors.IntegrityError, match=_shard(corrupt, 2).name):
        modelkit.load(corrupt)


def test_a_transformers_style_sharded_save_is_accepted(cli, project: Path) -> None:
    """What ``save_pretrained(dir, max_shard_size=...)`` writes, by huggingface_hub's own helper
    (its own index formatting, no canonical headers), recorded as a callback would."""
    import tiedmodel
    from huggingface_hub import save_torch_state_dict

    from modelkit.weights.hashing import IDENTITY, hash_layout
    from modelkit.weights.record import WeightsRecord

    run = project / "runs/tied"
    for name in read_layout(run).files:
        (run / name).unlink()
    torch.manual_seed(3)
    save_torch_state_dict(tiedmodel.TiedNet().state_dict(), run, max_shard_size="2KB")
    layout = read_layout(run)
    digest, files = hash_layout(layout)
    weights = WeightsRecord(
        digest, files, "sharded", INDEX, layout.total_size, layout.shared, IDENTITY
    )
    record = json.loads((run / "run.json").read_text()) | weights.to_fields()
    (run / "run.json").write_text(json.dumps(record))
    assert cli("eval", run, "--data", "digits")[0] == 0
    assert cli("card", run)[0] == 0
    code, out, err = cli(
        "release",
        "v1.0",
        "--run",
        run,
        "--to",
        "registry",
        "--repo",
        REPO,
        "--dry-run",
        "-f",
        "json",
    )
    assert code == 0, err
    assert set(layout.files) <= {f["path"] for f in json.loads(out)["files"]}
    for name in layout.files:  # and no weights at all: the hint does not blame training
        (run / name).unlink()
    code, _, err = cli("card", run)
    assert code == 2 and INDEX in err and "interrupted" not in err


SCRIPT = """
import modelkit
from tiedmodel import TiedNet

with modelkit.start_run("runs/script", seed=0) as run:
    model = TiedNet()
    run.finish(model, max_shard_size="3KB")
"""


def test_repro_against_a_sharded_run(cli, project: Path) -> None:
    (project / "make_tied.py").write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, "make_tied.py"], cwd=project, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert read_layout(project / "runs/script").kind == "sharded"
    code, out, err = cli("repro", "--against", "runs/script", "-f", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["verdict"] == "IDENTICAL" and r["weights_compared"] and r["tensors"] == []
    assert r["weights_sha256"]["recorded"] == r["weights_sha256"]["regenerated"]


def test_train_shards_its_final_weights(cli, in_tmp: Path) -> None:
    args = ("train", "--model", "mnist-mlp", "--epochs", "1", "--max-steps", "2", "--quiet")
    code, _, err = cli(*args, "--max-shard-size", "20KB", "--out", "runs/s")
    assert code == 0, err
    layout = read_layout(in_tmp / "runs/s")
    assert layout.kind == "sharded" and len(layout.headers) >= 3
    code, out, err = cli("eval", "runs/s", "-f", "json")
    assert code == 0, err
    assert (
        json.loads(out)["weights_sha256"]
        == json.loads((in_tmp / "runs/s/run.json").read_text())["weights_sha256"]
    )
