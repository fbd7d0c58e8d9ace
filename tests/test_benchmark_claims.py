"""A side's callgrind processes share the suite: each test runs in the first process that
claims it (``$MODELKIT_BENCH_CLAIMS``), the second goes backwards; merged, they are one run.
Checked with the real harness in two real pytest processes (time lane: no valgrind needed)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelkit.bench import harness, runner
from modelkit.bench.results import merge_processes

SUITE = """
import os, time
import pytest

@pytest.mark.parametrize("i", range(8))
def test_work(benchmark, i):
    with open(os.environ["CLAIMS_LOG"], "a") as f:
        f.write(f"{os.getpid()} {i}\\n")
    time.sleep(0.2)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
"""


def test_two_processes_split_the_suite_and_merge_into_one_run(tmp_path: Path) -> None:
    tree = tmp_path / "proj"
    (tree / "benchmarks").mkdir(parents=True)
    (tree / "benchmarks" / "test_w.py").write_text(SUITE)
    log, claims = tmp_path / "ran.log", tmp_path / "claims"
    claims.mkdir()
    hd = runner.make_harness_dir()
    how = runner.SuiteRun(tree, tree / "benchmarks", hd, "cpu", None, None, 1, 0.01, 120.0)

    def one(index: int):
        env = {harness.ENV_CLAIMS: str(claims), harness.ENV_REVERSE: str(index),
               "CLAIMS_LOG": str(log)}  # fmt: skip
        return runner.run_suite(tree, how, side="head", round=0, slot=0, extra_env=env)

    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(one, (0, 1)))
    ran = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(i) for _, i in ran) == list(range(8))  # each test once, none lost
    by_pid: dict[str, list[int]] = {}
    for pid, i in ran:
        by_pid.setdefault(pid, []).append(int(i))
    assert len(by_pid) == 2, by_pid  # both processes worked
    forward, backward = sorted(by_pid.values(), key=lambda v: v[0])
    assert forward[0] == 0 and backward[0] == 7 and backward == sorted(backward, reverse=True)
    merged = merge_processes(parts)
    ids = [f"benchmarks/test_w.py::test_work[{i}]" for i in range(8)]
    assert sorted(merged.collected) == sorted(ids)  # no test twice, none missing
    assert merged.outcomes == dict.fromkeys(ids, "passed")  # no "skipped" from the other one
    assert sorted(merged.benchmarks) == sorted(ids)
