"""The instruction lane (callgrind counts), accepted changes (commit trailers and --accept) and
the lane choice, on throwaway git repos (tests/bench_demo.py) with the real gate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import bench_demo as demo  # noqa: E402

from modelkit.bench import compare  # noqa: E402
from modelkit.bench.config import parse_bench_config  # noqa: E402
from modelkit.bench.plugin import Callgrind  # noqa: E402
from modelkit.bench.stats import MetricResult, decide_instructions  # noqa: E402
from modelkit.errors import BadInputError, ConfigError  # noqa: E402

needs_valgrind = pytest.mark.skipif(
    not compare.valgrind_usable()[0], reason="needs valgrind on x86-64 Linux"
)


@pytest.fixture()
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = demo.make_repo(tmp_path / "tiny")
    monkeypatch.chdir(repo)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return repo


# --------------------------------------------------------------------------- decisions


def _instr(base: float, head: float, *, threshold: float = 0.01, spread: float = 0.0):
    r = MetricResult("b::t", "instructions", "instructions", "instr/call", None, None)
    decide_instructions(r, [base], [head], threshold, spread=spread)
    return r


def test_instruction_threshold_is_inclusive_and_symmetric():
    assert _instr(1_000_000, 1_010_000).verdict == "regression"  # exactly +1%
    assert _instr(1_000_000, 1_009_999).verdict == "unchanged"
    assert _instr(1_000_000, 990_000).verdict == "improvement"
    assert _instr(1_000_000, 1_000_000).verdict == "unchanged"
    r = _instr(1_000_000, 1_020_000, spread=0.02)  # repeated calls disagreed: no verdict
    assert r.verdict == "undecided" and "not deterministic" in r.note
    assert r.lane == "instructions" and r.ratio == pytest.approx(1.02)


def test_config_validates_mode_and_instr_threshold():
    assert parse_bench_config({}).thresholds.instr_threshold == 0.005
    assert parse_bench_config({"mode": "time"}).mode == "time"
    with pytest.raises(ConfigError, match="'mode' must be one of"):
        parse_bench_config({"mode": "instruction"})
    for bad in (0, 1, 1.5):
        with pytest.raises(ConfigError, match="instr_threshold"):
            parse_bench_config({"instr_threshold": bad})
    with pytest.raises(ConfigError, match="per_benchmark.t\\*: 'instr_threshold'"):
        parse_bench_config({"per_benchmark": {"t*": {"instr_threshold": 2}}})
    assert parse_bench_config({}).instruction_isa == "native"
    assert parse_bench_config({"instruction_isa": "sse4"}).instruction_isa == "sse4"
    with pytest.raises(ConfigError, match="'instruction_isa' must be one of native, sse4.*'avx2'"):
        parse_bench_config({"instruction_isa": "avx2"})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "fast"], "unknown --mode 'fast'"),
        (["--instr-threshold", "0"], "--instr-threshold must be in (0, 1)"),
        (["--instr-threshold", "1"], "--instr-threshold must be in (0, 1)"),
        (["--accept", "no-colon"], "expected BENCH:METRIC"),
    ],
)
def test_bad_options_exit_2(tiny: Path, cli, args, message):
    code, out, err = cli("benchmark", "--compare", "HEAD", *args)
    assert code == 2 and message in err and "hint:" in err, err


def test_auto_without_valgrind_says_so_in_one_line(monkeypatch, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # a real PATH with no valgrind on it
    lane, note = compare.resolve_lane("auto", "cpu")
    assert lane == "time" and note and "valgrind is not installed" in note and "\n" not in note
    with pytest.raises(BadInputError, match="valgrind is not installed"):
        compare.resolve_lane("instructions", "cpu")
    assert compare.resolve_lane("auto", "cuda") == ("time", None)
    with pytest.raises(BadInputError, match="not for --device cuda"):
        compare.resolve_lane("instructions", "cuda")


@needs_valgrind
def test_auto_picks_instructions_on_cpu_with_valgrind():
    assert compare.resolve_lane("auto", "cpu") == ("instructions", None)


def test_client_requests_are_no_ops_outside_valgrind():
    cg = Callgrind()
    assert cg.running is False
    assert cg.request(Callgrind.START_INSTRUMENTATION) == 0  # the magic sequence ran natively


# --------------------------------------------------------------------------- accepted changes


def test_trailers_parsed_by_git_from_the_commits_between_ref_and_head(tiny: Path):
    base = demo.git(tiny, "rev-parse", "HEAD")
    demo.git(tiny, "commit", "-q", "--allow-empty", "-m", "before\n\nBenchmark-Accept: a b old")
    base2 = demo.git(tiny, "rev-parse", "HEAD")
    msg = (
        "wider model\n\nbody text\n\n"
        "Benchmark-Accept: test_forward instructions wider hidden layer\n"
        "Benchmark-Accept: test_forward[*] params\n"
        "Benchmark-Accept: lonely\n"
        "Signed-off-by: t <t@t>"
    )
    demo.git(tiny, "commit", "-q", "--allow-empty", "-m", msg)
    got = compare.accepts_from_trailers(tiny, base2)
    assert [(a.benchmark, a.metric, a.reason) for a in got if not a.malformed] == [
        ("test_forward", "instructions", "wider hidden layer"),
        ("test_forward[*]", "params", ""),
    ]
    assert [a.reason for a in got if a.malformed] == ["lonely"]
    assert len(compare.accepts_from_trailers(tiny, base)) == 4  # the older commit's one too
    assert compare.parse_accept_flag("test_x[a:b]:time").benchmark == "test_x[a:b]"


# --------------------------------------------------------------------------- end to end


@needs_valgrind
def test_instruction_lane_flags_a_regression_and_honours_trailers(tiny: Path, cli, tmp_path):
    """HEAD does 5% more work and has more parameters. The commit accepts the instruction
    change by trailer: listed as accepted; the parameter change is not: exit 3. Accepting it
    with --accept too: exit 0."""
    demo.git(tiny, "checkout", "-qb", "pr")
    demo.write_tree(tiny, work=42, extra_params=10)  # 40 -> 42 tanh(x @ W) per forward
    demo.commit_all(
        tiny,
        "deeper forward\n\nBenchmark-Accept: test_forward instructions two more layers, intended",
    )
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    code, out, err = cli(
        "benchmark", "--compare", "main", "--mode", "instructions",
        "--report-md", md, "--report-json", js,
    )  # fmt: skip
    assert code == 3, out + err
    report = json.loads(js.read_text())
    assert report["lane"] == "instructions"
    by = {(m["benchmark"].split("::")[1], m["metric"]): m for m in report["metrics"]}
    ins = by[("test_forward", "instructions")]
    assert ins["lane"] == "instructions" and ins["verdict"] == "regression"
    assert 1.03 < ins["ratio"] < 1.07, ins  # 2 more of 40 matmul+tanh steps
    assert ins["accepted"] and "two more layers, intended" in ins["accepted"]
    assert by[("test_forward", "params")]["verdict"] == "regression"
    assert by[("test_forward", "params")]["accepted"] is None
    # accuracy comes from the time lane's process; the deterministic tiny 'accuracy' is equal
    assert by[("test_accuracy", "accuracy")]["lane"] == "accuracy"
    assert report["summary"]["accepted"] == 1 and report["summary"]["regressions"] == 1
    text = md.read_text()
    assert "Accepted changes" in text and "instructions (callgrind)" in text
    assert "accepted: test_forward instructions regression" in err

    code, out, err = cli(
        "benchmark", "--compare", "main", "--mode", "instructions",
        "--accept", "test_forward:params", "--report-json", js,
    )  # fmt: skip
    assert code == 0, out + err
    report = json.loads(js.read_text())
    assert report["summary"]["accepted"] == 2 and report["status"] == "ok"


@needs_valgrind
def test_instruction_lane_aa_counts_match_across_trees(tiny: Path, cli, tmp_path):
    """REF is checked out under /tmp/modelkit-bench-ref-*, HEAD is the repo: different paths,
    same counts (the environment is padded to one size in this lane)."""
    js = tmp_path / "r.json"
    code, out, err = cli("benchmark", "--compare", "HEAD", "--report-json", js)
    assert code == 0, out + err
    report = json.loads(js.read_text())
    assert report["lane"] == "instructions"  # auto, on CPU, with valgrind
    ins = next(m for m in report["metrics"] if m["metric"] == "instructions")
    # counts are nearly deterministic: up to ~0.2% between processes when another process
    # loads the machine (docs/benchmark.md), well inside the gate's 0.5% change threshold
    assert ins["verdict"] == "unchanged" and abs(ins["ratio"] - 1) < 0.002, ins
    assert ins["base"] > 1e5  # 40 x (64x64 matmul + tanh): a real count, not a stub
    t = next(m for m in report["metrics"] if m["metric"] == "time")
    assert t["verdict"] == "info" and t["lane"] == "info"  # wall time, reported only


def test_instruction_lane_pads_both_sides_to_one_environment_size(tmp_path):
    """Instruction counts must not follow the trees' path lengths: the environment a side's
    process starts with has the same size whatever the tree (random size in the time lane)."""
    from modelkit.bench.runner import _env_bytes, side_env

    short, long = tmp_path / "a", tmp_path / ("b" * 200)
    short.mkdir()
    long.mkdir()
    sizes = {
        _env_bytes(side_env(t, tmp_path, "cpu", None, lane="instructions")) for t in (short, long)
    }
    assert len(sizes) == 1 and sizes.pop() % 65536 == 0
    env = side_env(short, tmp_path, "cpu", None, lane="instructions")
    assert env["MODELKIT_BENCH_LANE"] == "instructions" and env["PYTHONHASHSEED"] == "0"


def test_instruction_lane_kernels_follow_instruction_isa_not_the_callers_shell(
    tmp_path, monkeypatch
):
    """MKL's and oneDNN's AVX2 kernels run 100-400x slower under valgrind (docs/benchmark.md):
    ``instruction_isa = "sse4"`` caps both in the instruction lane's processes, ``"native"``
    (the default) lets them pick the machine's own; either way the caller's shell cannot change
    a count. The time lane keeps the caller's settings."""
    from modelkit.bench.runner import side_env

    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX512")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = side_env(tmp_path, tmp_path, "cpu", None, lane="instructions", isa="sse4")
    assert capped["MKL_ENABLE_INSTRUCTIONS"] == "SSE4_2" and capped["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    native = side_env(tmp_path, tmp_path, "cpu", None, lane="instructions")
    assert "MKL_ENABLE_INSTRUCTIONS" not in native and "ONEDNN_MAX_CPU_ISA" not in native
    timed = side_env(tmp_path, tmp_path, "cpu", None, lane="time", isa="sse4")
    assert timed["MKL_ENABLE_INSTRUCTIONS"] == "AVX512" and timed["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_cached_counts_are_keyed_by_the_kernels_they_counted(tmp_path):
    """A REF counted with SSE4-capped MKL/oneDNN is never reused for a native-kernel compare."""
    import subprocess

    from modelkit.bench import cache
    from modelkit.bench.harness import machine_fingerprint

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)  # fmt: skip
    fp = machine_fingerprint("cpu")
    keys = {
        (lane, isa): cache.key_of(
            cache.key_parts(
                tmp_path,
                "HEAD",
                suite_sha="s",
                deps_sha="d",
                fingerprint=fp,
                lane=lane,
                device="cpu",
                isa=isa,
            )
        )
        for lane in ("instructions", "time")
        for isa in ("sse4", "native")
    }
    assert keys["instructions", "sse4"] != keys["instructions", "native"]
    assert keys["time", "sse4"] == keys["time", "native"]  # the time lane runs the native kernels
