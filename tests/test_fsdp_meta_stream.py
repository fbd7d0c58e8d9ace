"""A sharded run's model built on the meta device (initial weights bitwise the ordinary
build's, or the whole model built where that cannot be guaranteed, never uninitialised memory)
and its final weights gathered one file at a time (byte-identical to the whole-state gather).

Real torchrun, real gloo, 2 CPU processes, the run's own setup on the bundled digits; the
worker is tests/fsdp_worker.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")

MODELS = '''
import torch
from torch import nn


class Plain(nn.Module):
    """Standard layers only: built on the meta device. gate has one row, so rank 1's shard
    of it is empty."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.norm = nn.BatchNorm1d(784)
        self.fc = nn.Linear(784, 33)
        self.emb = nn.Embedding(7, 33, padding_idx=0)
        self.ln = nn.LayerNorm(33)
        self.gate = nn.Linear(33, 1)
        self.head = nn.Linear(33, num_classes)

    def forward(self, x):
        ones = torch.ones(x.shape[0], dtype=torch.long)
        h = self.ln(torch.relu(self.fc(self.norm(x.flatten(1)))) + self.emb(ones))
        return self.head(h) * torch.sigmoid(self.gate(h))


class Even(nn.Module):
    """Every parameter's rows divide by 2 (the old whole-state gather could write it)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.norm = nn.BatchNorm1d(784)
        self.fc = nn.Linear(784, 32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.fc(self.norm(x.flatten(1)))))


class CustomInit(Plain):
    """Re-initialises after its layers did (GPT-style): cannot be replayed from
    reset_parameters, so the whole model is built."""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes)
        nn.init.normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.head.bias)


class OwnParameter(Plain):
    """A parameter of its own (no reset_parameters) whose value __init__ sets."""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes)
        self.scale = nn.Parameter(torch.full((num_classes,), 2.0))

    def forward(self, x):
        return super().forward(x) * self.scale


class Tied(Plain):
    """head and a second head share their weight (tied)."""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes)
        self.head2 = nn.Linear(33, num_classes)
        self.head2.weight = self.head.weight

    def forward(self, x):
        return super().forward(x) + 0 * self.head2.bias


def plain(num_classes: int = 10):
    return Plain(num_classes)


def even(num_classes: int = 10):
    return Even(num_classes)


def custom(num_classes: int = 10):
    return CustomInit(num_classes)


def own(num_classes: int = 10):
    return OwnParameter(num_classes)


def tied(num_classes: int = 10):
    return Tied(num_classes)
'''


def test_meta_build_is_the_ordinary_build_and_the_file_by_file_gather_writes_the_same_bytes(
    tmp_path: Path,
) -> None:
    (tmp_path / "models_meta.py").write_text(MODELS)
    worker = Path(__file__).with_name("fsdp_worker.py")
    out = tmp_path / "out"
    out.mkdir()
    names = ["plain", "even", "custom", "own", "tied"]
    names = [f"models_meta:{n}" for n in names]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            str(worker),
            str(out),
            *names,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    # rank 0 cannot write its final weights: both ranks stop with its error (none hangs)
    failure = results.pop("failure")
    assert failure[0]["error"] == "NotADirectoryError"
    assert failure[1]["error"] == "RemoteError" and failure[1]["message"].startswith("rank 0: ")
    inits = {name.split(":")[1]: r["init"] for name, r in results.items()}
    assert inits["plain"] == inits["even"] == {"init": "meta"}
    assert inits["custom"]["init"] == "full"
    assert (
        "initialises differently from its modules' reset_parameters" in inits["custom"]["init_note"]
    )
    assert "aten.normal_ on 'fc.weight'" in inits["custom"]["init_note"]
    assert inits["own"] == {
        "init": "full",
        "init_note": "the model's root module (OwnParameter) has no reset_parameters",
    }
    assert inits["tied"]["init"] == "full"
    for name, r in results.items():
        # the initial weights and the generator's state afterwards: bitwise the ordinary build
        assert r["same_names"] and r["bitwise"] and r["same_rng"], name
        assert r["same_output"], name
        for size, w in r["writes"].items():
            assert w["same_files"] and w["bytes_equal"] and w["same_record"], (name, size)
            # the old gather failed on CPU where rows do not divide by the world size (33)
            assert w["old_failed"] == (not name.endswith("even")), (name, size)
            several = size != "None"
            assert ("model.safetensors.index.json" in w["files"]) == several, (name, w)
            assert len(w["files"]) > 3 if several else w["files"] == ["model.safetensors"]


@pytest.mark.parametrize("size", ["1KB", None])
def test_a_streamed_save_writes_what_save_model_weights_writes(tmp_path: Path, size) -> None:
    """One process: the plan from meta stand-ins (and a real tensor sharing another's storage,
    stored once as huggingface_hub does), the tensors fetched one file at a time."""
    from modelkit.weights import plan_weights, save_model_weights, save_streamed_weights

    torch.manual_seed(0)
    base = torch.randn(40, 9)
    state = {"b.weight": base, "a.weight": base, "c.bias": torch.randn(30).to(torch.bfloat16)}
    state["d.count"] = torch.tensor([7], dtype=torch.int64)
    specs = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()}
    specs["b.weight"], specs["a.weight"] = base, base  # shared: planned from the real tensor
    plan = plan_weights(specs, size)
    asked: list[list[str]] = []

    def fetch(names: list[str]) -> dict:
        asked.append(names)
        return {n: state[n].clone() for n in names}

    old = save_model_weights(state, tmp_path / "old", max_shard_size=size)
    new = save_streamed_weights(plan, fetch, tmp_path / "new")
    assert new == old and new.shared_tensors == {"b.weight": "a.weight"}
    assert len(asked) == len(plan.files) == (len(old.files) - 1 if size else 1)
    for name in old.files:
        assert (tmp_path / "old" / name).read_bytes() == (tmp_path / "new" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(old.files)


CANNOT_REPLAY = """
import random
import torch
from torch import nn


class DrawsFromPython(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, int(2 + random.random() * 3))


class DrawsFromNumPy(nn.Module):
    def __init__(self):
        import numpy as np

        super().__init__()
        self.fc = nn.Linear(3, int(2 + np.random.rand() * 3))


class WithBuffer(nn.Linear):
    def __init__(self):
        super().__init__(3, 3)
        self.register_buffer("pe", torch.arange(3.0))


class Parent(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = nn.Linear(3, 3)
        self.own = nn.Parameter(torch.empty(3))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.zeros_(self.own)
        self.child.reset_parameters()


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.t = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.ones_(self.t)


class Fails(nn.Module):
    def __init__(self):
        super().__init__()
        self.n = int(torch.ones(1).sum())
"""


@pytest.mark.parametrize(
    ("name", "note"),
    [
        ("DrawsFromPython", "draws from Python's or NumPy's random generator"),
        ("DrawsFromNumPy", "draws from Python's or NumPy's random generator"),
        ("WithBuffer", "'pe' is not initialised by its module's reset_parameters"),
        ("Parent", "reset_parameters of the model's root module also writes 'child.weight'"),
        ("Scalar", "parameter 't' is a scalar"),
        ("Fails", "cannot be built on the meta device"),
    ],
)
def test_a_constructor_that_cannot_be_replayed_is_named(tmp_path: Path, name, note) -> None:
    """One process: why a model is built whole instead (run.json's init_note); the random
    generators are left exactly as they were."""
    import importlib.util
    import random

    import numpy as np

    from modelkit.training.meta_init import meta_build

    (tmp_path / "cannot.py").write_text(CANNOT_REPLAY)
    spec = importlib.util.spec_from_file_location("cannot", tmp_path / "cannot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def seed() -> None:
        torch.manual_seed(5)
        random.seed(5)
        np.random.seed(5)

    seed()
    expected = torch.rand(1), random.random(), np.random.rand()
    seed()
    built, plan, why = meta_build(getattr(module, name))
    assert built is None and plan is None and note in why
    assert (torch.rand(1), random.random(), np.random.rand()) == expected
