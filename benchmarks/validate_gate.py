"""Validate the gate per lane: false alarms over A/A compares, detection of an injected regression.

    PYTHONPATH=. python benchmarks/validate_gate.py --lane instructions --runs 20 \\
        --out gate-instructions.json --md gate-instructions.md
    PYTHONPATH=. python benchmarks/validate_gate.py --lane time --runs 20 --regression 0.05

``--target reference`` (default): a throwaway clone of this repository (its committed HEAD); the
real ``--compare`` of the reference models' suite (benchmarks/test_reference_models.py, ``-k``
to narrow it). A/A: REF = HEAD. Regression: a commit on top makes ``MnistMLP.forward`` do extra
work (``sum(range(n))``, n from ``$MODELKIT_VALIDATE_EXTRA``), so the MLP train step costs
``1 + regression`` times as much; n is calibrated by one extra compare first (instruction lane:
n for at least +``regression`` instructions per step; time lane: the same instruction ratio,
which is the work ratio). ``--target demo``: the tiny numpy package of tests/bench_demo.py (time
lane only; its ``work`` knob).

Reports per lane: detection rate (the MLP train step's verdict is ``regression``), false alarms
(any regression in an A/A compare), the measured ratio, and the wall time per compare (median),
as JSON (``--out``) and Markdown (``--md``); stops starting compares after ``--deadline`` (UTC
HH:MM) and says how many ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import bench_demo as demo  # noqa: E402

from modelkit.bench.compare import run_benchmark  # noqa: E402
from modelkit.bench.config import parse_bench_config  # noqa: E402
from modelkit.project import load_project  # noqa: E402

ENV_EXTRA = "MODELKIT_VALIDATE_EXTRA"
MLP_FILE = "modelkit/models/mlp.py"
MLP_RETURN = "        return self.net(x)  # (B, num_classes) logits\n"
MLP_INJECTED = (
    "        out = self.net(x)  # (B, num_classes) logits\n"
    "        import os  # validate_gate.py: injected extra work, $MODELKIT_VALIDATE_EXTRA units\n"
    "\n"
    "        sum(range(int(os.environ.get('MODELKIT_VALIDATE_EXTRA', '0'))))\n"
    "        return out\n"
)
# The injection aims at the asked regression itself (1%: the gate's default 0.5% threshold leaves
# a margin on both sides; A/A counts moved by up to 0.1%). A probe compare measures what one unit
# of extra work costs inside the real train step (a unit's cost measured alone, 178 instructions,
# overestimated it: 129 in the step).
MARGIN = 0.0
PROBE_UNITS = 400


TARGET_BENCH = {"reference": "test_train_step[mnist-mlp]", "demo": "test_forward"}


def git(repo: Path, *args: str) -> str:
    return demo.git(repo, *args)


def reference_repo(tmp: Path) -> tuple[Path, str, str]:
    """Clone this repository's HEAD; add a commit with the injectable extra work in the MLP."""
    repo = tmp / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    base = git(repo, "rev-parse", "HEAD")
    mlp = repo / MLP_FILE
    text = mlp.read_text()
    if MLP_RETURN not in text:
        raise SystemExit(f"cannot inject: {MLP_FILE} changed (no {MLP_RETURN.strip()!r})")
    mlp.write_text(text.replace(MLP_RETURN, MLP_INJECTED))
    slow = demo.commit_all(repo, "validate_gate: injectable extra work in MnistMLP.forward")
    git(repo, "checkout", "-q", base)
    return repo, base, slow


def one(repo: Path, ref: str, *, lane: str, keyword: str | None, bench_name: str) -> dict:
    """One real --compare; the target benchmark's verdict and ratio."""
    cfg = parse_bench_config(load_project(repo).benchmark, keyword=keyword)
    t0 = time.monotonic()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcome = run_benchmark(root=repo, cfg=cfg, compare=ref, use_cache=False, mode=lane)
    metric = "instructions" if lane == "instructions" else "time"
    m = next(
        (
            m
            for m in outcome.metrics
            if m.benchmark.endswith("::" + bench_name) and m.metric == metric
        ),
        None,
    )
    return {
        "status": outcome.status,
        "lane": outcome.lane,
        "verdict": m.verdict if m else "missing",
        "ratio": m.ratio if m else None,
        "base": m.base if m else None,
        "ci": [m.ci_low, m.ci_high] if m else None,
        "mde": m.mde if m else None,
        "rounds": outcome.rounds,
        "wall_s": round(time.monotonic() - t0, 1),
        # CPU seconds of the compare's processes: what it costs regardless of the machine's load
        "cpu_s": round(
            (c1 := resource.getrusage(resource.RUSAGE_CHILDREN)).ru_utime
            + c1.ru_stime
            - c0.ru_utime
            - c0.ru_stime,
            1,
        ),
        "any_regression": bool(outcome.regressions),
        "regressions": [f"{r.benchmark.split('::')[-1]}:{r.metric}" for r in outcome.regressions],
        "errors": outcome.to_dict()["errors"],
    }


def _past(deadline: dt.datetime | None) -> bool:
    return deadline is not None and dt.datetime.now(dt.timezone.utc) >= deadline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lane", choices=("instructions", "time"), default="instructions")
    ap.add_argument("--target", choices=("reference", "demo"), default="reference")
    ap.add_argument("--runs", type=int, default=20, help="compares per case (A/A, regression)")
    ap.add_argument(
        "--regression", type=float, default=None, help="injected: 0.01 instructions, 0.05 time"
    )
    ap.add_argument("--extra", type=int, default=None, help="extra-work units (skip calibration)")
    ap.add_argument("-k", dest="keyword", default=None, help="pytest -k for the suite")
    ap.add_argument("--deadline", default=None, help="UTC HH:MM: start no compare after it")
    ap.add_argument("--out", type=Path, default=None, help="JSON figures")
    ap.add_argument("--md", type=Path, default=None, help="Markdown figures")
    args = ap.parse_args()
    regression = args.regression or (0.01 if args.lane == "instructions" else 0.05)
    deadline = None
    if args.deadline:
        h, m = (int(x) for x in args.deadline.split(":"))
        deadline = dt.datetime.now(dt.timezone.utc).replace(hour=h, minute=m, second=0)
    tmp = Path(tempfile.mkdtemp(prefix="modelkit-validate-"))
    bench_name = TARGET_BENCH[args.target]
    results: dict[str, list[dict]] = {"aa": [], "regression": []}
    calibration: dict | None = None
    started = time.monotonic()

    def report(case: str, i: int, r: dict) -> None:
        if args.out:  # every compare kept at once: a run cut short still has its figures
            partial = args.out.with_suffix(".partial.json")
            partial.write_text(
                json.dumps({"calibration": calibration, "runs": results}, default=str)
            )
        ratio = f"{r['ratio']:.5f}" if r["ratio"] is not None else "-"
        print(
            f"{case} {i}: {r['verdict']} ratio {ratio} regressions {r['regressions']} "
            f"{r['wall_s']:.0f}s wall, {r['cpu_s']:.0f}s CPU",
            flush=True,
        )

    if args.target == "demo":
        if args.lane != "time":
            raise SystemExit("--target demo validates the time lane only")
        knobs = dict(min_rounds=5, max_rounds=10, max_time=60, bench_max_time=0.03)
        repo = demo.make_repo(tmp / "repo", work=100, **knobs)
        base = git(repo, "rev-parse", "HEAD")
        for i in range(args.runs):
            if _past(deadline):
                break
            results["aa"].append(
                r := one(repo, "HEAD", lane="time", keyword=None, bench_name=bench_name)
            )
            report("A/A", i + 1, r)
        demo.write_tree(repo, work=round(100 * (1 + regression)), **knobs)
        demo.commit_all(repo, "slower forward")
        for i in range(args.runs):
            if _past(deadline):
                break
            results["regression"].append(
                r := one(repo, base, lane="time", keyword=None, bench_name=bench_name)
            )
            report("regression", i + 1, r)
        extra = None
    else:
        repo, base, slow = reference_repo(tmp)
        # interleave A/A and regression compares, so load drift hits both cases alike
        git(repo, "checkout", "-q", slow)
        extra = args.extra
        for i in range(args.runs):
            if _past(deadline):
                break
            os.environ[ENV_EXTRA] = "0"  # the injected code reads it: A/A does no extra work
            results["aa"].append(
                r := one(repo, "HEAD", lane=args.lane, keyword=args.keyword, bench_name=bench_name)
            )
            report("A/A", i + 1, r)
            if extra is None:
                # size the injection on the real step: one probe compare (not counted)
                os.environ[ENV_EXTRA] = str(PROBE_UNITS)
                cal = one(repo, base, lane="instructions", keyword=args.keyword,
                          bench_name=bench_name)  # fmt: skip
                slope = (cal["ratio"] - 1) / PROBE_UNITS
                extra = math.ceil((regression + MARGIN) / slope)
                calibration = {
                    "probe_units": PROBE_UNITS,
                    "probe_ratio": cal["ratio"],
                    "units": extra,
                    "target": regression + MARGIN,
                }
                print(f"calibration: {calibration}", flush=True)
            if _past(deadline):
                break
            os.environ[ENV_EXTRA] = str(extra)
            results["regression"].append(
                r := one(repo, base, lane=args.lane, keyword=args.keyword, bench_name=bench_name)
            )
            report("regression", i + 1, r)

    def med(rows: list[dict], key: str) -> float | None:
        vals = [x[key] for x in rows if x.get(key) is not None]
        return statistics.median(vals) if vals else None

    aa, reg = results["aa"], results["regression"]
    aa_ratios = [abs(r["ratio"] - 1) for r in aa if r["ratio"] is not None]
    summary = {
        "lane": args.lane,
        "target": args.target,
        "suite_keyword": args.keyword,
        "benchmark": bench_name,
        "runs_asked": args.runs,
        "aa_runs": len(aa),
        "regression_runs": len(reg),
        "regression_injected": regression,
        "extra_work_units": extra,
        "calibration": calibration,
        "regression_ratio_max": max((r["ratio"] for r in reg if r["ratio"]), default=None),
        "aa_false_alarms": sum(r["any_regression"] for r in aa),
        "aa_max_abs_change": max(aa_ratios) if aa_ratios else None,
        "detected": sum(r["verdict"] == "regression" for r in reg),
        "regression_ratio_median": med(reg, "ratio"),
        "regression_ratio_min": min((r["ratio"] for r in reg if r["ratio"]), default=None),
        "wall_s_median": med(aa + reg, "wall_s"),
        "wall_s_max": max((r["wall_s"] for r in aa + reg), default=None),
        "cpu_s_median": med(aa + reg, "cpu_s"),
        "rounds_median": med(aa + reg, "rounds"),
        "total_s": round(time.monotonic() - started),
        "machine_note": f"{os.cpu_count()} CPU(s); load average at the end "
        f"{os.getloadavg()[0]:.1f} (shared with other jobs)",
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(
            json.dumps({"summary": summary, "runs": results}, indent=2, default=str)
        )
    if args.md:
        s = summary
        lines = [
            f"### Gate validation: {s['lane']} lane, {s['target']} suite",
            "",
            "| case | compares | flagged | ratio (median) | wall time / compare (median, max) "
            "| CPU time / compare (median) |",
            "|---|---|---|---|---|---|",
            f"| A/A | {s['aa_runs']} | {s['aa_false_alarms']} false alarm(s) | max abs change "
            f"{s['aa_max_abs_change']} | {med(aa, 'wall_s')} s, "
            f"{max((r['wall_s'] for r in aa), default=None)} s | {med(aa, 'cpu_s')} s |",
            f"| +{regression:.0%} injected | {s['regression_runs']} | {s['detected']} detected | "
            f"{s['regression_ratio_median']} | {med(reg, 'wall_s')} s, "
            f"{max((r['wall_s'] for r in reg), default=None)} s | {med(reg, 'cpu_s')} s |",
            "",
            f"{s['machine_note']}.",
        ]
        args.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
