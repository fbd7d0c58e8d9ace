"""Models built from config objects (a @dataclass, a pydantic model, a Namespace, a transformers
config) are recorded as class + values and rebuilt without a factory; own modules import
without a pyproject.toml; a module that would run training at import is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

import modelkit
from modelkit.errors import ModelNotImportable, NotRecordable
from modelkit.models.reference import ModelReference, reference_for_model
from modelkit.runs.documents import read_config_args, read_model_reference

GPT_MODULE = textwrap.dedent(
    '''
    """A tiny GPT-like model built from a dataclass config (nanoGPT's shape)."""
    from dataclasses import dataclass

    import torch
    from torch import nn


    @dataclass
    class GPTConfig:
        vocab_size: int = 40
        n_embd: int = 16
        block_size: int = 8


    class GPT(nn.Module):
        def __init__(self, config: GPTConfig) -> None:
            super().__init__()
            self.config = config
            self.wte = nn.Embedding(config.vocab_size, config.n_embd)
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.lm_head.weight = self.wte.weight  # tied, as in nanoGPT

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(idx.shape[1])
            return self.lm_head(self.wte(idx) + self.wpe(pos))  # (B, T, vocab)
    '''
)

TRAIN_SCRIPT = textwrap.dedent(
    """
    import torch

    import modelkit
    from gptmodel import GPT, GPTConfig


    def main():
        modelkit.seed_everything(0)
        model = GPT(GPTConfig(vocab_size=40, n_embd=16, block_size=8))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with modelkit.start_run("runs/gpt", model=model, config={"lr": 0.1}) as run:
            for step in range(3):
                idx = torch.randint(0, 40, (4, 8))
                loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log(step, loss=loss.item())
            run.finish(model)


    if __name__ == "__main__":
        main()
    """
)


@pytest.fixture()
def gpt_project(tmp_path: Path) -> Path:
    """A folder with no pyproject.toml: gptmodel.py + train.py, trained once by `python train.py`."""
    root = tmp_path / "nanogpt"
    root.mkdir()
    (root / "gptmodel.py").write_text(GPT_MODULE)
    (root / "train.py").write_text(TRAIN_SCRIPT)
    r = subprocess.run(
        [sys.executable, "train.py"], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    sys.modules.pop("gptmodel", None)
    return root


def test_a_dataclass_config_model_is_recorded_and_loads_from_another_folder(
    gpt_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import load_file

    run = gpt_project / "runs/gpt"
    ref = json.loads((run / "config.json").read_text())["modelkit"]["reference"]
    assert ref["ref"] == "gptmodel:GPT" and ref["kwargs"] == {}
    assert ref["configs"]["config"] == {
        "class": "gptmodel:GPTConfig",
        "kind": "dataclass",
        "values": {"block_size": 8, "n_embd": 16, "vocab_size": 40},
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # gptmodel is found through the run's recorded script folder
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(gpt_project))])
    model = modelkit.load(run)
    assert type(model.config).__name__ == "GPTConfig" and model.config.n_embd == 16
    assert model.lm_head.weight is model.wte.weight
    saved = load_file(run / "model.safetensors")
    assert torch.equal(model.wpe.weight, saved["wpe.weight"])


def test_the_card_snippet_for_a_dataclass_config_model_runs(gpt_project: Path) -> None:
    from modelkit.weights import loading_snippet, read_layout

    run = gpt_project / "runs/gpt"
    ref = json.loads((run / "config.json").read_text())["modelkit"]["reference"]
    code = loading_snippet(
        read_layout(run),
        reference=ref["ref"],
        kwargs=ref["kwargs"],
        folder=repr(str(run)),
        configs=read_config_args(ref["configs"], source="config.json"),
    )
    assert "GPTConfig(**{'block_size': 8, 'n_embd': 16, 'vocab_size': 40})" in code
    code += "import torch\nprint(model(torch.arange(8).reshape(1, 8)).sum().item())\n"
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=gpt_project, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    model = modelkit.load(run)
    import torch

    with torch.no_grad():
        assert float(r.stdout) == model(torch.arange(8).reshape(1, 8)).sum().item()


def test_a_module_that_trains_at_import_is_refused_before_anything_runs(
    gpt_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same model class defined in a script whose training runs at import
    script = gpt_project / "unguarded.py"
    script.write_text(
        GPT_MODULE + '\nimport modelkit\nrun = modelkit.start_run("runs/gpt", overwrite=True)\n'
    )
    monkeypatch.chdir(gpt_project)
    before = (gpt_project / "runs/gpt/run.json").read_bytes()
    ref = ModelReference(ref="unguarded:GPT", configs=_configs_of(gpt_project))
    with pytest.raises(ModelNotImportable) as info:
        ref.build()
    assert "would run training" in info.value.message and "line" in info.value.message
    assert "__main__" in info.value.hint
    assert "unguarded" not in sys.modules
    assert (gpt_project / "runs/gpt/run.json").read_bytes() == before


def _configs_of(root: Path) -> dict:
    cfg = json.loads((root / "runs/gpt/config.json").read_text())
    return read_config_args(cfg["modelkit"]["reference"]["configs"], source="config.json")


class Holder:
    """Not a config object: nothing can rebuild it from JSON."""


class Cfg(pydantic.BaseModel):
    """A pydantic config."""

    width: int = 3


def test_an_argument_that_cannot_be_recorded_is_a_typed_error() -> None:
    with pytest.raises(NotRecordable) as info:
        ModelReference(ref="m:Net", kwargs={"helper": Holder()})
    exc = info.value
    assert (exc.argument, exc.type_name, exc.exit_code) == ("helper", "Holder", 2)
    assert "config object" in exc.hint


def test_namespace_and_pydantic_configs_round_trip() -> None:
    import argparse

    from modelkit.models.configs import decode_config, encode_config

    ns = argparse.Namespace(width=3, act="relu")
    entry = encode_config(ns, reference="m:Net", argument="args")
    assert entry.to_dict() == {
        "class": "argparse:Namespace",
        "kind": "namespace",
        "values": vars(ns),
    }
    assert decode_config(entry, source="t") == ns
    entry = encode_config(Cfg(width=5), reference="m:Net", argument="cfg")
    assert entry.kind == "pydantic" and entry.values == {"width": 5}
    assert decode_config(entry, source="t") == Cfg(width=5)


def test_the_card_prose_is_found_without_a_pyproject(gpt_project: Path) -> None:
    from modelkit.card import read_prose
    from modelkit.project import Project

    (gpt_project / "MODEL_CARD.md").write_text("## Uses\n\nToy text only.\n")
    prose = read_prose(Project(), gpt_project / "runs/gpt")
    assert prose is not None and prose.path == gpt_project / "MODEL_CARD.md"
    assert "Toy text only." in prose.sections["Uses"]


def test_importing_modelkit_imports_no_framework() -> None:
    code = (
        "import sys, modelkit, modelkit.integrations, modelkit.tracking, modelkit.models.configs\n"
        "print(sorted(m for m in ('transformers', 'lightning', 'torch') if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_transformers_config_is_recorded_the_transformers_way() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20, n_positions=8)
    model = transformers.GPT2LMHeadModel(config)
    ref = reference_for_model(model)
    entry = ref.configs["config"]
    assert entry.kind == "transformers" and entry.values["architectures"] == ["GPT2LMHeadModel"]
    assert ref.transformers_config()["n_embd"] == 8
    rebuilt = read_model_reference(json.loads(json.dumps(ref.to_dict())), source="t").build()
    assert type(rebuilt) is type(model) and rebuilt.config.n_embd == 8


def test_a_dataclass_gpt_is_released_with_its_source_and_verified_with_no_project(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No factory, no pyproject entry: the run declares the model's source file as an artifact,
    the release carries it, and verify rebuilds the model from it after the project is gone."""
    import shutil

    import torch
    from release_helpers import git_project

    root = tmp_path / "proj"
    root.mkdir()
    (root / "gptmodel.py").write_text(
        GPT_MODULE
        + "\n\ndef windows():\n    g = torch.Generator().manual_seed(1)\n"
        + "    x = torch.randint(0, 40, (6, 8), generator=g)\n"
        + "    return torch.utils.data.TensorDataset(x, torch.roll(x, -1, 1))\n"
    )
    (root / "train.py").write_text(
        TRAIN_SCRIPT.replace(
            'config={"lr": 0.1}', 'config={"lr": 0.1}, task="language-modeling"'
        ).replace("run.finish(model)", 'run.add_artifact("gptmodel.py")\n        run.finish(model)')
    )
    git_project(root)
    r = subprocess.run([sys.executable, "train.py"], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    monkeypatch.chdir(root)
    code, _, err = cli("eval", "runs/gpt", "--data", "gptmodel:windows")
    assert code == 0, err
    assert cli("card", "runs/gpt")[0] == 0
    code, _, err = cli(
        "release", "v0.1", "--run", "runs/gpt", "--to", "registry", "--repo", "o/gpt"
    )
    assert code == 0, err
    registry = tmp_path / "registry"
    shutil.move(root / "registry", registry)
    expected = modelkit.load(root / "runs/gpt")
    shutil.rmtree(root)  # the project, its run and its script are gone
    sys.modules.pop("gptmodel", None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(root))])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli("verify", f"{registry}@v0.1", "--repo", "o/gpt")
    assert code == 0, err
    loaded = modelkit.load(registry, "v0.1", repo="o/gpt")
    assert type(loaded.config).__name__ == "GPTConfig"
    x = torch.arange(8).reshape(1, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))
