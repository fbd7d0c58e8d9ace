"""`modelkit benchmark`: the real gate on throwaway git repos (tiny numpy package + suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import bench_demo as demo  # noqa: E402


@pytest.fixture()
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = demo.make_repo(tmp_path / "tiny")
    monkeypatch.chdir(repo)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return repo


def test_injected_slowdown_accuracy_drop_and_one_sided_error(tiny: Path, cli, tmp_path: Path):
    demo.git(tiny, "checkout", "-qb", "pr")
    # +30% work, -5 points; room for rounds beyond the 6 a rank test needs on a noisy machine
    demo.write_tree(tiny, work=52, acc_drop=0.05, new_feature=True, max_rounds=10)
    demo.commit_all(tiny, "slower, less accurate, new benchmark")
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    summary = tmp_path / "summary.md"
    import os

    os.environ["GITHUB_STEP_SUMMARY"] = str(summary)
    try:
        code, out, err = cli(
            "benchmark",
            "--compare",
            "main",
            "--mode",
            "time",
            "--report-md",
            md,
            "--report-json",
            js,
        )
    finally:
        del os.environ["GITHUB_STEP_SUMMARY"]
    assert code == 3, out + err
    report = json.loads(js.read_text())
    by = {(m["benchmark"].split("::")[1], m["metric"]): m for m in report["metrics"]}
    fwd = by[("test_forward", "time")]
    assert fwd["verdict"] == "regression"
    assert fwd["ci_low"] > 1.0 and fwd["ratio"] > 1.1 and fwd["mde"] > 0
    assert by[("test_accuracy", "accuracy")]["verdict"] == "regression"
    assert by[("test_forward", "params")]["verdict"] == "unchanged"
    # errors on REF only (the benchmark uses a HEAD-only function): an error, not a regression
    assert by[("test_new_feature", "-")]["verdict"] == "error"
    assert report["errors"][0]["side"] == "REF"
    assert report["base"]["how"] == "merge-base of HEAD and main"
    assert (
        "regression" in md.read_text() and md.read_text() == summary.read_text().rstrip("\n") + "\n"
    )


def test_aa_uncommitted_docs_change_is_quiet(tiny: Path, cli, tmp_path: Path):
    (tiny / "README.md").write_text("# tinypkg\n\nDocs only.\n")  # uncommitted, docs only
    js = tmp_path / "r.json"
    code, out, err = cli("benchmark", "--compare", "HEAD", "--mode", "time", "--report-json", js)
    assert code == 0, out + err
    report = json.loads(js.read_text())
    assert report["status"] == "ok" and report["errors"] == []
    assert {m["verdict"] for m in report["metrics"]} <= {"unchanged", "undecided"}
    assert any("uncommitted changes" in w and "working tree" in w for w in report["warnings"])
    assert "uncommitted changes" in err


def test_run_baseline_cache_and_fingerprint(tiny: Path, cli, tmp_path: Path):
    base = tmp_path / "base.json"
    code, out, err = cli("benchmark", "--processes", "2", "--mode", "time", "--out", base)
    assert code == 0, out + err
    doc = json.loads(base.read_text())
    assert doc["modelkit"]["fingerprint"]["cpu_count"] and len(doc["modelkit"]["processes"]) == 2
    fwd = next(b for b in doc["benchmarks"] if b["name"] == "test_forward")
    assert len(fwd["stats"]["data"]) >= 10  # raw samples kept
    # readable by pytest-benchmark's own compare (its console script's entry point, run by this
    # interpreter: a venv that shares its site-packages has no script of its own)
    entry = "import sys; from pytest_benchmark.cli import main; sys.exit(main())"
    res = subprocess.run(
        [sys.executable, "-c", entry, "compare", str(base)], capture_output=True, text=True
    )
    assert res.returncode == 0 and "test_forward" in res.stdout, res.stderr
    # the same clean commit again: cached results reused
    code, out, err = cli(
        "benchmark", "--processes", "2", "--mode", "time", "--out", tmp_path / "again.json"
    )
    assert code == 0 and "reused cached results" in err
    # against the saved baseline (same machine): no regression
    js = tmp_path / "r.json"
    code, out, err = cli("benchmark", "--baseline", base, "--mode", "time", "--report-json", js)
    assert code == 0, out + err
    assert json.loads(js.read_text())["mode"] == "baseline"
    # another machine's baseline: refused unless --force
    doc["modelkit"]["fingerprint"]["cpu_model"] = "Some Other CPU"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    code, out, err = cli("benchmark", "--baseline", other, "--mode", "time")
    assert code == 2 and "another machine" in err and "--force" in err
    code, out, err = cli(
        "benchmark", "--baseline", other, "--force", "--max-rounds", "3", "--mode", "time"
    )
    assert code in (0, 3) and "another machine" in err


def test_unknown_ref(tiny: Path, cli):
    code, out, err = cli("benchmark", "--compare", "mian")
    assert code == 2 and "unknown ref 'mian'" in err and "did you mean 'main'" in err


def test_shallow_clone_hints_fetch_depth(tiny: Path, cli, tmp_path: Path, monkeypatch):
    demo.write_tree(tiny, work=41)
    demo.commit_all(tiny, "second")
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{tiny}", str(clone)], check=True)
    first = demo.git(tiny, "rev-list", "--max-parents=0", "HEAD")
    monkeypatch.chdir(clone)
    code, out, err = cli("benchmark", "--compare", first)
    assert code == 2 and "shallow clone" in err and "fetch-depth: 0" in err


def test_ref_that_fails_to_import(tiny: Path, cli):
    demo.git(tiny, "checkout", "-qb", "broken")
    demo.write_tree(tiny, broken_import=True)
    broken = demo.commit_all(tiny, "broken")
    demo.git(tiny, "checkout", "-q", "main")
    code, out, err = cli("benchmark", "--compare", broken)
    assert code == 2
    assert f"REF {broken}" in err and "fails to import" in err and "tinypkg is broken here" in err


def test_empty_suite(tiny: Path, cli):
    (tiny / "benchmarks" / "test_tiny.py").write_text("# nothing yet\n")
    code, out, err = cli("benchmark", "--mode", "time")
    assert code == 2 and "empty suite" in err
    code, out, err = cli("benchmark", "--suite", "nope", "--mode", "time")
    assert code == 2 and "empty suite" in err


def test_not_a_git_repo(in_tmp: Path, cli):
    (in_tmp / "benchmarks").mkdir()
    code, out, err = cli("benchmark", "--compare", "main")
    assert code == 2 and "not inside a git repository" in err


def test_side_env_leaves_out_the_callers_pytest_settings(tmp_path: Path, monkeypatch):
    """The gate run from a pytest-xdist worker (PYTEST_XDIST_WORKER set) or with PYTEST_ADDOPTS:
    a side's pytest must not see them (pytest-benchmark disables itself in an xdist worker, and
    no benchmark would be timed)."""
    from modelkit.bench.runner import side_env

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_ADDOPTS", "-n 2")
    monkeypatch.setenv("MODELKIT_TEST_KEEP", "1")
    for lane in ("time", "instructions"):
        env = side_env(tmp_path, tmp_path, "cpu", None, lane=lane)
        assert not [k for k in env if k.startswith("PYTEST_")], lane
        assert env["MODELKIT_TEST_KEEP"] == "1" and env["MODELKIT_BENCH_LANE"] == lane
