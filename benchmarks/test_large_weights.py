"""`modelkit release` (to a local registry) and `verify` (with its load check) on a generated
multi-GB sharded model, side by side with `sha256sum` of the same bytes, as ratios.

Goals (issue 21): peak RSS of each verb <= 1.5 x the largest shard + the interpreter's
baseline (python + torch + modelkit imported); wall time <= 1.3 x sha256sum (release) and
<= 1.5 x sha256sum (verify). Each command runs in a child process; its peak RSS is
``getrusage(RUSAGE_CHILDREN)`` of a fresh wrapper process. The model (a run recorded with
``start_run`` + ``run.finish(model, max_shard_size=...)``, evaluated and carded) is generated
in a temp dir, never in the repository.

Run: PYTHONPATH=$PWD python -m pytest benchmarks/test_large_weights.py --benchmark-only -s
(MODELKIT_BENCH_WEIGHTS_BYTES sets the size, default 2 GB; the model is cut in 5 shards.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes and GBs: run by hand, never in the PR gate's suite

SIZE = int(os.environ.get("MODELKIT_BENCH_WEIGHTS_BYTES", 2 * 10**9))
WIDTH = 2048  # each hidden layer: WIDTH x WIDTH float32 = 16 MiB
ROUNDS = int(os.environ.get("MODELKIT_BENCH_ROUNDS", 3))
REPO = "org/big"
RESULTS: dict[str, dict[str, float]] = {}

MODEL = """
import torch
from torch import nn


class Big(nn.Module):
    def __init__(self, depth: int = 2, width: int = 64) -> None:
        super().__init__()
        self.depth, self.width = depth, width
        self.inp = nn.Linear(28 * 28, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        x = self.inp(x.flatten(1))
        for layer in self.hidden:
            x = torch.relu(layer(x)) / self.width**0.5
        return self.out(x)
"""
RECORD = """
import sys

import torch

import modelkit
from big import Big

with modelkit.start_run(sys.argv[4], seed=0, fingerprint_every=0) as run:
    with torch.no_grad():
        model = Big(depth=int(sys.argv[1]), width=int(sys.argv[2]))
    run.finish(model, max_shard_size=int(sys.argv[3]))
"""
MAXRSS = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(r.stderr[-2000:] if r.returncode else '')\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(r.returncode)\n"
)


def _child(argv: list[str], *, cwd: Path, path: Path | None = None) -> int:
    """Run ``argv`` in a child (``path``, default ``cwd``, importable); returns its peak RSS
    in KiB (it must exit 0)."""
    where = path or cwd
    env = dict(os.environ, PYTHONPATH=f"{where}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    r = subprocess.run(
        [sys.executable, "-c", MAXRSS, *argv], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git project with the recorded, evaluated and carded sharded run ``runs/big``."""
    root = tmp_path_factory.mktemp("large-weights")
    (root / "big.py").write_text(MODEL)
    (root / "record.py").write_text(RECORD)
    (root / "pyproject.toml").write_text('[project]\nname = "big"\nlicense = "MIT"\n')
    (root / "MODEL_CARD.md").write_text(
        "## Uses\n\nBenchmark.\n\n## Bias, risks and ethical considerations\n\nNone.\n\n"
        "## Citation and contact\n\nmodelkit.\n"
    )
    (root / ".gitignore").write_text("runs/\nregistry/\n")
    _make_run(root, "big", depth=-(-SIZE // (WIDTH * WIDTH * 4)), width=WIDTH)  # >= SIZE
    _make_run(root, "tiny", depth=1, width=64)  # the same verbs' fixed cost: the baseline
    git = ["git", "-c", "user.email=b@example.com", "-c", "user.name=b", "-C", str(root)]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)  # GBs: never left behind


def _make_run(root: Path, name: str, *, depth: int, width: int) -> None:
    """Record ``runs/<name>`` (5 shards of the model's bytes), evaluate it, write its card."""
    mk, run = [sys.executable, "-m", "modelkit"], f"runs/{name}"
    shard = str(depth * width * width * 4 // 5)
    _child([sys.executable, "record.py", str(depth), str(width), shard, run], cwd=root)
    _child([*mk, "eval", run, "--data", "digits"], cwd=root)
    _child([*mk, "card", run], cwd=root)


def _weights(root: Path) -> list[Path]:
    from modelkit.weights import read_layout

    layout = read_layout(root / "runs/big")
    return [layout.path(name) for name in layout.files]


def _measure(
    benchmark, name: str, argv: list[str], *, cwd: Path, path: Path | None = None, setup=None
) -> None:
    rss: list[int] = []
    benchmark.group = "large-weights"
    benchmark.pedantic(
        lambda: rss.append(_child(argv, cwd=cwd, path=path)),
        setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0,
    )  # fmt: skip
    RESULTS[name] = {"median_s": benchmark.stats.stats.median, "peak_rss_kib": max(rss)}
    benchmark.extra_info.update(peak_rss_mib=round(max(rss) / 1024, 1))


def test_sha256sum(benchmark, project: Path) -> None:
    """The baseline: sha256sum of every weights file (shards + index), in a child process."""
    files = [str(p) for p in _weights(project)]
    _measure(benchmark, "sha256sum", ["sha256sum", *files], cwd=project)


def _release(run: str, registry: str, repo: str) -> list[str]:
    argv = [sys.executable, "-m", "modelkit", "release", "v1.0", "--run", run]
    return [*argv, "--to", registry, "--repo", repo]


def _verify(registry: Path, repo: str) -> list[str]:
    return [sys.executable, "-m", "modelkit", "verify", f"{registry}@v1.0", "--repo", repo]


def test_release(benchmark, project: Path) -> None:
    """`modelkit release` to a fresh local registry each round (its verify included); the
    baseline: the same release of a 0.1 MB model."""
    fresh = lambda: shutil.rmtree(project / "registry", ignore_errors=True)  # noqa: E731
    _measure(benchmark, "release", _release("runs/big", "registry", REPO), cwd=project, setup=fresh)
    base = _child(_release("runs/tiny", "registry-tiny", "org/tiny"), cwd=project)
    RESULTS["release"]["baseline_rss_kib"] = base


def test_verify(benchmark, project: Path) -> None:
    """`modelkit verify` from another directory (download, hashes, load check); the baseline:
    the same verify of the 0.1 MB model."""
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    argv = _verify(project / "registry", REPO)
    _measure(benchmark, "verify", argv, cwd=elsewhere, path=project)
    tiny = _verify(project / "registry-tiny", "org/tiny")
    RESULTS["verify"]["baseline_rss_kib"] = _child(tiny, cwd=elsewhere, path=project)
    report = _report(project)
    benchmark.extra_info.update(report)
    print("\nlarge-weights:", json.dumps(report, indent=2))
    for verb in ("release", "verify"):
        assert report[f"{verb}_rss_over_shard"] <= 1.5, report


def _report(project: Path) -> dict[str, float]:
    """The ratios: time vs sha256sum; peak RSS above the same verb's on a 0.1 MB model (the
    interpreter, torch, modelkit) vs the largest shard."""
    files = _weights(project)
    largest = max(p.stat().st_size for p in files) / 1024
    out: dict[str, float] = {
        "total_bytes": sum(p.stat().st_size for p in files),
        "shards": len(files) - 1,
        "largest_shard_mib": round(largest / 1024, 1),
        "sha256sum_s": round(RESULTS["sha256sum"]["median_s"], 2),
        "sha256sum_peak_rss_mib": round(RESULTS["sha256sum"]["peak_rss_kib"] / 1024, 1),
        "rounds": ROUNDS,
    }
    for verb in ("release", "verify"):
        r = RESULTS[verb]
        out[f"{verb}_s"] = round(r["median_s"], 2)
        out[f"{verb}_time_ratio"] = round(r["median_s"] / RESULTS["sha256sum"]["median_s"], 2)
        out[f"{verb}_peak_rss_mib"] = round(r["peak_rss_kib"] / 1024, 1)
        out[f"{verb}_baseline_rss_mib"] = round(r["baseline_rss_kib"] / 1024, 1)
        above = r["peak_rss_kib"] - r["baseline_rss_kib"]
        out[f"{verb}_rss_over_shard"] = round(above / largest, 2)
    return out
