"""The reference models' gate suite: training and inference speed, memory, size, accuracy.

Run by `modelkit benchmark` (each side imports modelkit from its own tree) or plain
`pytest benchmarks/test_reference_models.py`. Timings use random inputs of the real shapes
(speed does not depend on pixel values); accuracy trains on real data (scikit-learn's digits)
for a fixed short budget with fixed seeds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

MODELS = {"mnist-mlp": (1, 28, 28, 10), "small-cnn": (3, 28, 28, 2)}
# The instruction lane counts the CNN at batch 4: valgrind runs oneDNN's AVX2 convolutions
# ~500x slower than native (a batch-4 step 2.9 s there); a count needs no large batch.
INSTR_BATCH = {"mnist-mlp": 64, "small-cnn": 4}


def _batch_size(bench, name: str) -> int:
    return INSTR_BATCH[name] if bench.lane == "instructions" else 64


def _model(name: str, device: str) -> torch.nn.Module:
    from modelkit.models.registry import build_model

    c, h, w, classes = MODELS[name]
    torch.manual_seed(0)
    model, _ = build_model(name, kwargs={"num_classes": classes})
    return model.to(device)


def _batch(name: str, n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    c, h, w, classes = MODELS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, c, h, w, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x.to(device), y.to(device)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # stabler timings on a shared 2-core runner


@pytest.mark.parametrize("name", sorted(MODELS))
def test_train_step(bench, bench_device: str, name: str) -> None:
    """One optimizer step at batch 64 (Adam, as in the reference article): samples/s, memory, size;
    in the instruction lane, instructions per step (the CNN at batch 4)."""
    model = _model(name, bench_device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _batch(name, _batch_size(bench, name), bench_device)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    bench.params(model)
    bench.peak_memory(step)
    sps = bench.train_throughput(step, samples_per_step=len(x))
    assert sps is None or sps > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inference(bench, bench_device: str, name: str) -> None:
    """Forward pass at batch 64 under no_grad: latency p50/p95 and samples/s."""
    model = _model(name, bench_device)
    x, _ = _batch(name, _batch_size(bench, name), bench_device)
    out = bench.inference(model, x)
    assert out.shape == (len(x), MODELS[name][3])


def test_accuracy_mlp_digits(bench, bench_device: str, tmp_path) -> None:
    """Held-out accuracy of mnist-mlp after 3 epochs on digits, for seeds 0, 1, 2."""
    from modelkit.config import resolve_config
    from modelkit.training.loop import train

    def train_eval(seed: int) -> float:
        cfg = resolve_config(
            overrides={
                "model": "mnist-mlp",
                "data": "digits",
                "epochs": 3,
                "batch_size": 64,
                "seed": seed,
                "device": bench_device,
                "threads": 1,
            }
        )
        record = train(cfg, out=tmp_path / f"seed{seed}", overwrite=True)
        return record["metrics"]["test_accuracy"]

    values = bench.accuracy(train_eval, seeds=(0, 1, 2))
    assert all(0.5 < v <= 1.0 for v in values), values


def _cuda_event_ms(step, *, repeats: int = 50) -> list[float]:
    """Per-step GPU time in ms from CUDA events (queued work only, no host-side timer skew)."""
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        times.append((start, end))
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in times]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_train_step_cuda(bench, bench_device: str, name: str, precision: str) -> None:
    """One step at batch 256 on CUDA per precision (channels_last for the CNN): CUDA-event
    step time, samples/s and peak CUDA memory. Skipped unless the suite runs on cuda."""
    if not bench_device.startswith("cuda"):
        pytest.skip("GPU path: run the suite with --modelkit-device cuda")
    import statistics

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    model = _model(name, bench_device).train()
    x, y = _batch(name, 256, bench_device)
    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    try:
        bench.peak_memory(step)
        for _ in range(5):
            step()
        ms = _cuda_event_ms(step)
        bench.record("cuda_step_ms", statistics.median(ms), kind="timing", unit="ms")
        sps = bench.train_throughput(step, samples_per_step=len(x))
        assert sps is None or sps > 0
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
