"""Hashing + packaging 1 GiB of weights vs `sha256sum` of the same file, in the same run.

Goal: packaging throughput >= 90% of sha256sum's; peak RSS growth <= 64 MiB.
Run: PYTHONPATH=$PWD python -m pytest benchmarks/test_release_packaging.py --benchmark-only -s
(MODELKIT_BENCH_BYTES overrides the 1 GiB size.)
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a measurement, not part of the PR gate's suite

SIZE = int(os.environ.get("MODELKIT_BENCH_BYTES", 1 << 30))


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose model.safetensors holds SIZE bytes of one F32 tensor."""
    import hashlib
    import struct

    run = tmp_path_factory.mktemp("bench") / "run"
    run.mkdir()
    n = SIZE // 4
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "w": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]},
        }
    ).encode()
    header += b" " * (-len(header) % 8)
    h = hashlib.sha256()
    with open(run / "model.safetensors", "wb") as f:
        for part in (struct.pack("<Q", len(header)), header):
            f.write(part)
            h.update(part)
        block = os.urandom(1 << 20)
        left = n * 4
        while left:
            b = block[: min(left, len(block))]
            f.write(b)
            h.update(b)
            left -= len(b)
    record = {"status": "complete", "model": "mnist-mlp", "weights_sha256": h.hexdigest()}
    (run / "run.json").write_text(json.dumps(record))
    (run / "config.json").write_text("{}")
    (run / "eval.json").write_text(json.dumps({"weights_sha256": h.hexdigest()}))
    (run / "README.md").write_text("card")
    return run


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs sha256sum")
def test_sha256sum(benchmark, big_run: Path) -> None:
    benchmark.group = "release-packaging"
    benchmark.pedantic(
        lambda: subprocess.run(["sha256sum", str(big_run / "model.safetensors")], check=True, capture_output=True),
        rounds=5, iterations=1, warmup_rounds=1,
    )  # fmt: skip


def test_build_package(benchmark, big_run: Path) -> None:
    from modelkit.release.package import build_package

    benchmark.group = "release-packaging"
    before = _rss_mib()
    pkg = benchmark.pedantic(
        lambda: build_package(big_run, version="v1.0", repo_id="org/x", card=b"card"),
        rounds=5, iterations=1, warmup_rounds=1,
    )  # fmt: skip
    growth = _rss_mib() - before
    benchmark.extra_info["peak_rss_growth_mib"] = round(growth, 1)
    assert pkg.file("model.safetensors").size > SIZE - 4096
    assert growth <= 64, f"peak RSS grew by {growth:.0f} MiB"
