"""Wall time of ``modelkit benchmark --compare`` with and without REF's results cached.

    python benchmarks/measure_compare.py --target reference --runs 3 --out ref.json
    python benchmarks/measure_compare.py --target transformer --runs 3 --out gpt.json

Each run: a fresh, empty ``$MODELKIT_CACHE``; ``--compare`` (REF measured, then stored); the
same ``--compare`` again (REF read from the cache). ``reference``: a throwaway clone of this
repository's committed HEAD, its gate suite (``markers = "not slow"``), A/A against HEAD.
``transformer``: a throwaway repo with a 2-layer causal transformer (d 64, 4 heads, context
64, byte vocabulary) and three benchmarks as a language-model maintainer would write them:
train-step throughput in tokens/s, inference tokens/s, val loss after 20 steps (lower is
better, 3 seeds); A/A against ``master`` (a bare ``--compare``). Prints and writes the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELKIT = Path(sys.executable).parent / "modelkit"

GPT = '''\
"""A 2-layer causal transformer (nanoGPT-shaped), for the gate's timing figures."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.heads = heads

    def forward(self, x):  # (B, T, d)
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab=256, ctx=64, d=64, heads=4, layers=2):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx):  # (B, T) -> (B, T, vocab)
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.blocks(x)))


def batch(seed, B=8, T=64):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, 64, (B, T + 1), generator=g)  # a 64-symbol "corpus"
    return text[:, :-1], text[:, 1:]


def loss(model, x, y):
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())
'''

SUITE = """\
import pytest
import torch

from tinygpt.model import GPT, batch, loss


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["gpt-2l"])
def test_train_step(bench, name):
    torch.manual_seed(0)
    model = GPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = batch(0)

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model, x, y).backward()
        opt.step()

    bench.params(model)
    bench.train_throughput(step, samples_per_step=x.numel(), unit="tokens/s")


@pytest.mark.parametrize("name", ["gpt-2l"])
def test_inference(bench, name):
    torch.manual_seed(0)
    x, _ = batch(1)
    bench.inference(GPT(), x, items=x.numel(), unit="tokens/s")


def test_val_loss(bench):
    def train_eval(seed):
        torch.manual_seed(seed)
        model = GPT()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for i in range(20):
            opt.zero_grad(set_to_none=True)
            loss(model, *batch(100 * seed + i)).backward()
            opt.step()
        with torch.no_grad():
            return float(loss(model, *batch(10_000)))

    bench.accuracy(train_eval, seeds=(0, 1, 2), name="val_loss", direction="lower", unit="nats")
"""

PYPROJECT = """\
[project]
name = "tinygpt"
version = "0.0.1"

[tool.modelkit.benchmark]
suite = "benchmarks"
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def make_transformer_repo(repo: Path) -> list[str]:
    """A master-only repo with the transformer suite; returns the compare arguments."""
    (repo / "tinygpt").mkdir(parents=True)
    (repo / "benchmarks").mkdir()
    (repo / "pyproject.toml").write_text(PYPROJECT)
    (repo / "tinygpt" / "__init__.py").write_text("")
    (repo / "tinygpt" / "model.py").write_text(GPT)
    (repo / "benchmarks" / "test_gpt.py").write_text(SUITE)
    _git(repo, "init", "-q", "-b", "master")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "tiny gpt")
    return ["--compare"]


def make_reference_clone(repo: Path) -> list[str]:
    """A clone of this repository's HEAD; A/A against HEAD."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    return ["--compare", "HEAD"]


def _compare(repo: Path, args: list[str], cache: Path, report: Path) -> tuple[float, dict]:
    """One compare's wall time and report; its progress lines (the phases) are printed with
    the seconds since its start and the load average, to stderr."""
    env = {**os.environ, "MODELKIT_CACHE": str(cache)}
    env.pop("GITHUB_STEP_SUMMARY", None)
    t0 = time.monotonic()
    proc = subprocess.Popen([str(MODELKIT), "benchmark", *args, "--report-json", str(report)],
                            cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    tail: list[str] = []
    for line in proc.stderr or []:
        tail = [*tail[-40:], line]
        stamp = f"{time.monotonic() - t0:7.1f}s load {os.getloadavg()[0]:5.2f}"
        print(f"  {stamp}  {line.rstrip()}", file=sys.stderr, flush=True)
    wall = time.monotonic() - t0
    if proc.wait() not in (0, 3):
        raise SystemExit(f"compare failed ({proc.returncode}): {''.join(tail)[-2000:]}")
    return wall, json.loads(report.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=("reference", "transformer"), required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--gate-arg", action="append", default=[],
                    help="extra argument for `modelkit benchmark` (e.g. --gate-arg=--max-time=1500)")  # fmt: skip
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelkit-measure-") as tmp:
        repo = Path(tmp) / "repo"
        args = (make_reference_clone if a.target == "reference" else make_transformer_repo)(repo)
        args += a.gate_arg
        for i in range(a.runs):
            cache = Path(tmp) / f"cache{i}"
            cold, r1 = _compare(repo, args, cache, Path(tmp) / "r1.json")
            print(json.dumps({"run": i + 1, "uncached_s": round(cold, 1),
                              "load": os.getloadavg()[0]}), file=sys.stderr, flush=True)  # fmt: skip
            warm, r2 = _compare(repo, args, cache, Path(tmp) / "r2.json")
            row = {"run": i + 1, "uncached_s": round(cold, 1), "cached_s": round(warm, 1),
                   "status": [r1["status"], r2["status"]],
                   "cached_base": bool((r2.get("base") or {}).get("from_cache")),
                   "load": os.getloadavg()[0]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "target": a.target, "runs": rows, "cpu_count": os.cpu_count(),
        "median_uncached_s": statistics.median(r["uncached_s"] for r in rows),
        "median_cached_s": statistics.median(r["cached_s"] for r in rows),
    }  # fmt: skip
    print(json.dumps(summary))
    if a.out:
        a.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
