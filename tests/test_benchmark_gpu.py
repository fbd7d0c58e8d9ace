"""The gate's CUDA lane: CUDA-event timing with an L2 flush between repetitions, and GPU clocks
and driver in the machine fingerprint. Marked ``gpu``: skipped without CUDA (unverified until
run on a GPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_lane_times_with_events_and_flushes_l2(benchmark):
    from modelkit.bench.plugin import Bench
    from modelkit.bench.results import BenchmarkDoc, read_record, summarise_doc

    bench = Bench(benchmark, "cuda")
    x = torch.randn(2048, 2048, device="cuda")
    sps = bench.train_throughput(lambda: x @ x, samples_per_step=2048)
    samples = benchmark.extra_info["modelkit_cuda_event_s"]
    assert len(samples) == 30 and all(0 < s < 1 for s in samples)
    assert sps == pytest.approx(2048 / min(samples))
    # the gate's per-process sample is the fastest CUDA-event time, not the host timer
    doc = {
        "benchmarks": [
            {
                "fullname": "t",
                "name": "t",
                "stats": {"min": 99.0},
                "extra_info": benchmark.extra_info,
            }
        ]
    }
    assert summarise_doc(read_record(BenchmarkDoc, doc, source="t"))["t"].time == min(samples)


def test_fingerprint_has_gpu_driver_and_clocks():
    from modelkit.bench.plugin import machine_fingerprint

    fp = machine_fingerprint("cuda")
    assert fp.gpu and fp.driver and fp.cuda
    assert fp.gpu_clocks and "MHz" in fp.gpu_clocks
