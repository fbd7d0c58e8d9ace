"""The reference GPT's gate suite (``gpt-tiny``): train-step throughput in tokens/s and val loss
after a fixed number of steps (lower is better), on the bundled byte-level corpus.

Run by `modelkit benchmark` (each side imports modelkit from its own tree) or plain
`pytest benchmarks/test_reference_gpt.py`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

CONTEXT = 64
BATCH = 8
# The instruction lane counts a 2-window step: valgrind runs MKL's AVX2 matmuls 100-400x slower
# than native (a batch-8 step took 33 s there); a count needs no large batch.
INSTR_BATCH = 2
STEPS = 20  # val loss after this many AdamW steps


@pytest.fixture(scope="module")
def corpus():
    from modelkit.data.text import load_pystdlib

    return load_pystdlib(context_length=CONTEXT)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # stabler timings on a shared 2-core runner


def _gpt(seed: int) -> torch.nn.Module:
    from modelkit.models.registry import build_model

    torch.manual_seed(seed)
    model, _ = build_model("gpt-tiny", kwargs={"context_length": CONTEXT})
    return model


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


@pytest.mark.parametrize("name", ["gpt-tiny"])
def test_train_step(bench, bench_device: str, corpus, name: str) -> None:
    """One AdamW step on 8 windows of 64 bytes: tokens/s, parameters, memory; instructions per
    step (on 2 windows) in the instruction lane."""
    model = _gpt(0).to(bench_device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    n = INSTR_BATCH if bench.lane == "instructions" else BATCH
    x, y = corpus.x_train[:n].to(bench_device), corpus.y_train[:n].to(bench_device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _loss(model, x, y).backward()
        opt.step()

    bench.params(model)
    bench.peak_memory(step)
    tps = bench.train_throughput(step, samples_per_step=x.numel(), unit="tokens/s")
    assert tps is None or tps > 0


def test_val_loss_gpt(bench, bench_device: str, corpus) -> None:
    """Held-out loss (nats per byte) of gpt-tiny after 20 steps, seeds 0 and 1."""
    g = torch.Generator().manual_seed(0)
    val = torch.randperm(len(corpus.x_test), generator=g)[:32]
    xv, yv = corpus.x_test[val].to(bench_device), corpus.y_test[val].to(bench_device)

    def train_eval(seed: int) -> float:
        model = _gpt(seed).to(bench_device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        order = torch.randperm(len(corpus.x_train), generator=torch.Generator().manual_seed(seed))
        for i in range(STEPS):
            idx = order[i * BATCH : (i + 1) * BATCH]
            opt.zero_grad(set_to_none=True)
            _loss(
                model, corpus.x_train[idx].to(bench_device), corpus.y_train[idx].to(bench_device)
            ).backward()
            opt.step()
        with torch.no_grad():
            return float(_loss(model.eval(), xv, yv))

    values = bench.accuracy(train_eval, seeds=(0, 1), name="val_loss", direction="lower",
                            unit="nats")  # fmt: skip
    assert all(0 < v < 6 for v in values), values  # below ln(256) = 5.55 after 20 steps
