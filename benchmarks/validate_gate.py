"""Validate the gate: false-alarm rate over A/A runs and power against an injected slowdown.

    PYTHONPATH=. python benchmarks/validate_gate.py --runs 20 --slowdown 0.05 --out gate.json

Builds a throwaway git repo (tests/bench_demo.py: a tiny numpy model + suite), then runs the real
``--compare`` ``--runs`` times with REF = HEAD (A/A) and ``--runs`` times with HEAD's forward
doing ``1 + slowdown`` times the work, and reports the false-alarm rate, the detection rate,
the MDE reached and the wall time per compare (medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import bench_demo as demo  # noqa: E402

from modelkit.bench.compare import run_benchmark  # noqa: E402
from modelkit.bench.config import parse_bench_config  # noqa: E402
from modelkit.project import load_project  # noqa: E402


def one(repo: Path, ref: str) -> dict:
    cfg = parse_bench_config(load_project(repo).benchmark)
    t0 = time.monotonic()
    outcome = run_benchmark(root=repo, cfg=cfg, compare=ref, use_cache=False)
    fwd = next(
        m for m in outcome.metrics if m.benchmark.endswith("test_forward") and m.metric == "time"
    )
    return {
        "status": outcome.status,
        "verdict": fwd.verdict,
        "ratio": fwd.ratio,
        "ci": [fwd.ci_low, fwd.ci_high],
        "mde": fwd.mde,
        "rounds": outcome.rounds,
        "wall_s": time.monotonic() - t0,
        "any_regression": bool(outcome.regressions),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--slowdown", type=float, default=0.05)
    ap.add_argument("--work", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--max-rounds", type=int, default=8)
    ap.add_argument("--max-time", type=float, default=60)
    args = ap.parse_args()
    knobs = dict(
        min_rounds=5, max_rounds=args.max_rounds, max_time=args.max_time, bench_max_time=0.03
    )
    tmp = Path(tempfile.mkdtemp(prefix="modelkit-validate-"))
    repo = demo.make_repo(tmp / "repo", work=args.work, **knobs)
    base = demo.git(repo, "rev-parse", "HEAD")
    results: dict[str, list[dict]] = {"aa": [], "slow": []}
    for i in range(args.runs):
        r = one(repo, "HEAD")
        results["aa"].append(r)
        print(
            f"A/A {i + 1}: {r['verdict']} ratio {r['ratio']:.4f} mde {r['mde']} {r['wall_s']:.0f}s",
            flush=True,
        )
    demo.write_tree(repo, work=round(args.work * (1 + args.slowdown)), **knobs)
    demo.commit_all(repo, "slower forward")
    for i in range(args.runs):
        r = one(repo, base)
        results["slow"].append(r)
        print(
            f"slow {i + 1}: {r['verdict']} ratio {r['ratio']:.4f} mde {r['mde']} {r['wall_s']:.0f}s",
            flush=True,
        )

    def med(rows, key):
        vals = [x[key] for x in rows if x[key] is not None]
        return statistics.median(vals) if vals else None

    summary = {
        "runs": args.runs,
        "slowdown_injected": args.slowdown,
        "aa_false_alarms": sum(r["any_regression"] for r in results["aa"]),
        "aa_verdicts": {
            v: sum(r["verdict"] == v for r in results["aa"])
            for v in ("unchanged", "undecided", "regression", "improvement")
        },
        "slow_detected": sum(r["verdict"] == "regression" for r in results["slow"]),
        "slow_verdicts": {
            v: sum(r["verdict"] == v for r in results["slow"])
            for v in ("unchanged", "undecided", "regression", "improvement")
        },
        "slow_ratio_median": med(results["slow"], "ratio"),
        "aa_mde_median": med(results["aa"], "mde"),
        "slow_mde_median": med(results["slow"], "mde"),
        "wall_s_median": med(results["aa"] + results["slow"], "wall_s"),
        "rounds_median": med(results["aa"] + results["slow"], "rounds"),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(
            json.dumps({"summary": summary, "runs": results}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
