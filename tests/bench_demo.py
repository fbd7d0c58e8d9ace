"""A throwaway git repo for gate tests: a tiny numpy 'model' package and a small benchmarks/ suite.

Used by tests/test_benchmark_compare.py and benchmarks/validate_gate.py. Knobs make a commit
slower (``work``; the suite counts its instructions in the instruction lane), less accurate
(``acc_drop``), bigger (``extra_params``), add a HEAD-only benchmark (``new_feature``) or
break the package's import (``broken_import``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

PYPROJECT = """\
[project]
name = "tinypkg"
version = "0.0.1"

[tool.modelkit.benchmark]
suite = "benchmarks"
markers = "not slow"
min_rounds = {min_rounds}
max_rounds = {max_rounds}
max_time = {max_time}
bench_max_time = {bench_max_time}
bench_min_rounds = 5
"""

MODEL = """\
import numpy as np
WORK = {work}
_rng = np.random.default_rng(0)
W = _rng.standard_normal((64, 64)) / 8
X = _rng.standard_normal((64, 64))


def forward(x=X):
    for _ in range(WORK):
        x = np.tanh(x @ W)
    return x


def num_params():
    return W.size + {extra_params}


def train_eval(seed):
    # a deterministic 'accuracy after a fixed budget' per seed
    return 0.90 + 0.002 * (seed % 3) - {acc_drop}
{new_feature}
"""

SUITE = """\
from tinypkg import model


def test_forward(bench, benchmark):
    bench.record("params", model.num_params(), kind="exact")
    if bench.lane == "instructions":
        bench.instructions(model.forward)  # instructions per call, under callgrind
    else:
        benchmark(model.forward)


def test_accuracy(bench):
    bench.accuracy(model.train_eval, seeds=(0, 1, 2))
{extra}
"""

NEW_TEST = """

def test_new_feature(benchmark):
    benchmark(model.new_feature)
"""


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` (quiet, fixed identity)."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def write_tree(
    repo: Path,
    *,
    work: int = 40,
    acc_drop: float = 0.0,
    extra_params: int = 0,
    new_feature: bool = False,
    broken_import: bool = False,
    min_rounds: int = 2,
    max_rounds: int = 6,  # a rank test needs 6 paired rounds to reject
    max_time: float = 120,
    bench_max_time: float = 0.02,
) -> None:
    """Write (or rewrite) the package and suite."""
    (repo / "tinypkg").mkdir(parents=True, exist_ok=True)
    (repo / "benchmarks").mkdir(exist_ok=True)
    (repo / "pyproject.toml").write_text(
        PYPROJECT.format(
            min_rounds=min_rounds,
            max_rounds=max_rounds,
            max_time=max_time,
            bench_max_time=bench_max_time,
        )
    )
    (repo / "tinypkg" / "__init__.py").write_text(
        "raise ImportError('tinypkg is broken here')\n" if broken_import else ""
    )
    (repo / "tinypkg" / "model.py").write_text(
        MODEL.format(
            work=work,
            acc_drop=acc_drop,
            extra_params=extra_params,
            new_feature="\n\ndef new_feature():\n    return forward()\n" if new_feature else "",
        )
    )
    (repo / "benchmarks" / "test_tiny.py").write_text(
        SUITE.format(extra=NEW_TEST if new_feature else "")
    )
    if not (repo / "README.md").exists():
        (repo / "README.md").write_text("# tinypkg\n")


def make_repo(repo: Path, **knobs) -> Path:
    """A new repo on branch main with one commit of the tiny project."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    write_tree(repo, **knobs)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tiny project")
    return repo


def commit_all(repo: Path, message: str) -> str:
    """Commit everything; returns the new commit."""
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")
