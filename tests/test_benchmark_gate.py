"""The gate at the speed of a pull request (issue 23) on throwaway git repos: a parametrised
benchmark's regression accepted by a real trailer, REF's results reused from the cache (and
invalidated by a dependency change), ``--compare`` with no ref on a ``master``-only repository,
quality metrics with a direction, and every benchmark accounted for."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import bench_demo as demo  # noqa: E402

from modelkit.bench import compare  # noqa: E402
from modelkit.bench.accepts import Accept, matches, name_matches  # noqa: E402
from modelkit.bench.config import Thresholds  # noqa: E402
from modelkit.bench.deciders import mark_blocking  # noqa: E402
from modelkit.bench.stats import MetricResult, decide_instructions, decide_quality  # noqa: E402

needs_valgrind = pytest.mark.skipif(
    not compare.valgrind_usable()[0], reason="needs valgrind on x86-64 Linux"
)

PYPROJECT = """\
[project]
name = "tinylm"
version = "0.0.1"

[tool.modelkit.benchmark]
suite = "benchmarks"
min_rounds = 2
max_rounds = 4
max_time = 120
bench_max_time = 0.02
"""

MODEL = """\
import numpy as np
WORK = {work}
LOSS = {loss}
_rng = np.random.default_rng(0)
W = _rng.standard_normal((32, 32)) / 6
X = _rng.standard_normal((32, 32))


def step(x=X):
    for _ in range(WORK):
        x = np.tanh(x @ W)
    return x


def val_loss(seed):
    return LOSS + 0.001 * seed
"""

SUITE = """\
import pytest
from tinylm import model


@pytest.mark.parametrize("name", ["mnist-mlp"])
def test_train_step(bench, benchmark, name):
    if bench.lane == "instructions":
        bench.instructions(model.step)
    else:
        benchmark(model.step)


def test_val_loss(bench):
    bench.accuracy(model.val_loss, seeds=(0, 1, 2), name="val_loss", direction="lower", unit="nats")
{extra}
"""

RECORDS_NOTHING = """

def test_records_nothing(bench):
    bench.record("note", 1.0, kind="info")
"""


def _write(repo: Path, *, work: int = 20, loss: float = 2.0, extra: str = "") -> None:
    (repo / "tinylm").mkdir(parents=True, exist_ok=True)
    (repo / "benchmarks").mkdir(exist_ok=True)
    (repo / "pyproject.toml").write_text(PYPROJECT)
    (repo / "tinylm" / "__init__.py").write_text("")
    (repo / "tinylm" / "model.py").write_text(MODEL.format(work=work, loss=loss))
    (repo / "benchmarks" / "test_lm.py").write_text(SUITE.format(extra=extra))
    if not (repo / "requirements.txt").exists():
        (repo / "requirements.txt").write_text("numpy\n")


@pytest.fixture()
def master_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "lm"
    repo.mkdir()
    demo.git(repo, "init", "-q", "-b", "master")
    _write(repo)
    demo.commit_all(repo, "tiny lm")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MODELKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return repo


# --------------------------------------------------------------------------- decisions


def test_accept_ids_are_literal_with_star_the_only_wildcard():
    assert name_matches("test_train_step[mnist-mlp]", "test_train_step[mnist-mlp]")
    assert not name_matches("test_train_step[mnist-mlp]", "test_train_step[m]")  # not a class
    assert not name_matches("test_train_step[m-t]", "test_train_step[n]")
    assert name_matches("test_train_step[*]", "test_train_step[small-cnn]")
    assert not name_matches("test_?", "test_a")  # '?' is literal
    assert name_matches("*", "anything[at all]")
    row = MetricResult("benchmarks/t.py::test_train_step[mnist-mlp]", "instructions",
                       "instructions", "", None, None)  # fmt: skip
    for pattern, hit in [("test_train_step[mnist-mlp]", True), ("test_train_step", True),
                         ("benchmarks/t.py::test_train_step[mnist-mlp]", True),
                         ("test_train_step[small-cnn]", False), ("test_train", False)]:  # fmt: skip
        assert matches(Accept(pattern, "instructions"), row) is hit, pattern


def test_a_large_change_is_decided_despite_varying_counts():
    """Issue 22: counts varied 1.6% between calls and the change was 21x: a regression."""
    r = MetricResult("b::t", "instructions", "instructions", "instr/call", None, None)
    decide_instructions(r, [1_000_000], [21_000_000], 0.005, spread=0.016)
    assert r.verdict == "regression"
    # +1% with counts varying 1.6%: undecided, beyond the threshold: blocks (exit 3)
    r = MetricResult("b::t", "instructions", "instructions", "instr/call", None, None)
    decide_instructions(r, [1_000_000], [1_010_000], 0.005, spread=0.016)
    mark_blocking(r)
    assert r.verdict == "undecided" and "not decidable" in r.blocking
    # within the threshold and noisy: undecided, not blocking
    r = MetricResult("b::t", "instructions", "instructions", "instr/call", None, None)
    decide_instructions(r, [1_000_000], [1_002_000], 0.005, spread=0.016)
    mark_blocking(r)
    assert r.verdict == "undecided" and r.blocking == ""


def test_quality_with_direction_in_any_range():
    def q(base, head, *, hib, margin):
        r = MetricResult("b::t", "val_loss", "quality", "nats", None, None, higher_is_better=hib)
        decide_quality(r, base, head, margin=margin, alpha=0.05)
        return r.verdict

    assert q([2.0, 2.1, 2.2], [2.3, 2.4, 2.5], hib=False, margin=0.02) == "regression"
    assert q([2.0, 2.1, 2.2], [1.7, 1.8, 1.9], hib=False, margin=0.02) == "improvement"
    assert q([2.0, 2.1, 2.2], [2.0, 2.1, 2.2], hib=False, margin=0.02) == "unchanged"
    assert q([55.0, 56.0], [50.0, 51.0], hib=True, margin=1.0) == "regression"  # not in [0, 1]
    assert q([55.0, 56.0], [50.0, 51.0], hib=False, margin=1.0) == "improvement"


# --------------------------------------------------------------------------- end to end


def test_strict_fails_a_benchmark_with_nothing_to_judge(master_repo: Path, cli, tmp_path):
    _write(master_repo, extra=RECORDS_NOTHING)
    js = tmp_path / "r.json"
    code, out, err = cli("benchmark", "--mode", "time", "--report-json", js)
    assert code == 0, out + err
    report = json.loads(js.read_text())
    row = next(m for m in report["metrics"] if m["benchmark"].endswith("test_records_nothing"))
    assert row["verdict"] == "unjudged" and "nothing the gate can judge" in row["note"]
    val = next(m for m in report["metrics"] if m["metric"] == "val_loss")
    assert val["kind"] == "quality" and val["higher_is_better"] is False and val["unit"] == "nats"
    assert "GPU lane not run" in out + err
    code, out, err = cli("benchmark", "--mode", "time", "--strict", "--no-cache")
    assert code == 3 and "unjudged (--strict): test_records_nothing" in out + err


def test_unknown_ref_lists_the_branches(master_repo: Path, cli):
    code, out, err = cli("benchmark", "--compare", "main")
    assert code == 2 and "unknown ref 'main'" in err and "branches here: master" in err


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the gate's): load on a shared machine moves
    wall time by minutes, CPU time much less."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@pytest.mark.slow
@needs_valgrind
def test_trailer_cache_and_default_branch_end_to_end(master_repo: Path, cli, tmp_path):
    """On a master-only repo: a bare --compare measures against the merge-base with master; a
    real trailer accepts the parametrised benchmark's instruction regression; the second
    compare reuses REF's results (the report says so, and it costs less CPU); a dependency change
    invalidates them; a worse val loss (lower is better) fails the gate."""
    demo.git(master_repo, "checkout", "-qb", "pr")
    _write(master_repo, work=24)  # +20% work per step
    demo.commit_all(master_repo, "deeper step\n\n"
                    "Benchmark-Accept: test_train_step[mnist-mlp] instructions intended")  # fmt: skip
    js = tmp_path / "r.json"
    t0 = _children_cpu()
    code, out, err = cli("benchmark", "--compare", "--report-json", js)
    first_s = _children_cpu() - t0
    assert code == 0, out + err
    report = json.loads(js.read_text())
    assert report["lane"] == "instructions" and report["base"]["ref"] == "master"
    assert "default branch" in report["base"]["how"] and report["base"]["from_cache"] is None
    ins = next(m for m in report["metrics"] if m["metric"] == "instructions")
    assert ins["verdict"] == "regression" and ins["accepted"] and "intended" in ins["accepted"]
    assert 1.1 < ins["ratio"] < 1.3
    assert next(m for m in report["metrics"] if m["metric"] == "val_loss")["verdict"] == "unchanged"

    t0 = _children_cpu()
    code, out, err = cli("benchmark", "--compare", "--report-json", js)
    second_s = _children_cpu() - t0
    assert code == 0, out + err
    again = json.loads(js.read_text())
    assert again["base"]["from_cache"]["key"] and "reused from the cache" in out + err
    again_ins = next(m for m in again["metrics"] if m["metric"] == "instructions")
    assert again_ins["base"] == ins["base"]  # REF's count is the cached one
    # HEAD re-measured in another process: its count is reproducible within what the gate
    # calls a change (instr_threshold, 0.5%: docs/benchmark.md), not to the instruction (the tiny
    # step's count moved 0.22% between two compares at load 4); the same decision either way
    assert abs(again_ins["ratio"] / ins["ratio"] - 1) < Thresholds().instr_threshold
    assert again_ins["verdict"] == "regression" and again_ins["accepted"]
    assert second_s < first_s, (first_s, second_s)  # the gate's CPU seconds: REF not re-run

    (master_repo / "requirements.txt").write_text("numpy\nscipy\n")  # a dependency change
    demo.commit_all(master_repo, "add scipy")
    code, out, err = cli("benchmark", "--compare", "--report-json", js)
    assert code == 0, out + err
    assert json.loads(js.read_text())["base"]["from_cache"] is None  # re-measured

    _write(master_repo, work=24, loss=2.5)  # val loss worse by 0.5 nats (lower is better)
    demo.commit_all(master_repo, "worse loss")
    code, out, err = cli("benchmark", "--compare", "--report-json", js)
    assert code == 3, out + err
    val = next(m for m in json.loads(js.read_text())["metrics"] if m["metric"] == "val_loss")
    assert val["verdict"] == "regression" and val["est"] == pytest.approx(0.5)
