"""End to end: `modelkit init`, then inside the new repository everything its README and
workflows promise, with the same commands they run (a small training budget).

init → pre-commit on every file → actionlint → its own tests → `modelkit train` → eval →
a second commit → `modelkit benchmark --compare HEAD~1` → `modelkit card` →
`modelkit release v0.1.0 --to <local registry>` → `modelkit verify <registry>@v0.1.0`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def run(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """`modelkit init digit-net` in a temp dir with a throwaway git identity."""
    base = tmp_path_factory.mktemp("e2e")
    gitconfig = base / "gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = modelkit test\n\temail = test@modelkit.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
    )
    root = base / "digit-net"
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        # the scaffold's package first, then this checkout's modelkit: nothing is installed
        "PYTHONPATH": os.pathsep.join([str(root / "src"), str(REPO)]),
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "MODELKIT_CACHE": str(base / "cache"),
    }
    env.pop("PYTEST_ADDOPTS", None)
    ok(run([sys.executable, "-m", "modelkit", "init", "digit-net"], cwd=base, env=env))
    return root, env


def modelkit(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "modelkit", *args], cwd=cwd, env=env, timeout=540)


def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return ok(run(["git", *args], cwd=cwd, env=env)).strip()


def test_scaffold_end_to_end(scaffold: tuple[Path, dict[str, str]]) -> None:
    root, env = scaffold
    assert git("log", "--format=%s", cwd=root, env=env) == "Initial commit: modelkit init"

    # the generated code and files pass the generated pre-commit hooks, changing nothing
    ok(run([str(BIN / "pre-commit"), "run", "--all-files"], cwd=root, env=env, timeout=600))
    assert git("status", "--porcelain", cwd=root, env=env) == ""
    # and the generated workflows pass actionlint (shellcheck on their run: steps too)
    ok(run([str(BIN / "actionlint"), "-no-color"], cwd=root, env=env))

    # its own tests pass (including one real training epoch)
    out = ok(
        run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env)
    )
    assert "6 passed" in out

    # `modelkit train` with the smoke config (1 epoch) writes a complete run of the new model
    ok(modelkit("train", "-c", "configs/smoke.toml", "--out", "runs/main", "-q", cwd=root, env=env))
    record = json.loads((root / "runs/main/run.json").read_text())
    assert record["status"] == "complete" and record["model"] == "digit-net"
    assert record["git"]["commit"] == git("rev-parse", "HEAD", cwd=root, env=env)
    assert record["git"]["dirty"] is False  # runs/ is ignored by the generated .gitignore
    assert record["metrics"]["test_accuracy"] > 0.5
    ev = json.loads(ok(modelkit("eval", "runs/main", "--format", "json", cwd=root, env=env)))
    assert ev["accuracy"] == pytest.approx(record["metrics"]["test_accuracy"])

    # a second commit, then the PR gate against the previous one
    readme = root / "README.md"
    readme.write_text(readme.read_text() + "\nTrained on the bundled digits.\n")
    git("commit", "-qam", "docs: say what it is trained on", cwd=root, env=env)

    # the time lane: the instruction lane (the default where valgrind is installed) has its own
    # end-to-end tests (tests/test_benchmark_instructions.py); a conv net under callgrind is slow
    r = modelkit(
        "benchmark", "--compare", "HEAD~1", "--device", "cpu", "--max-time", "45", "--mode", "time",
        "--report-md", "bench.md", "--report-json", "bench.json",
        cwd=root, env=env,
    )  # fmt: skip
    # 0: no regression; 3: the gate flagged one (a docs-only change on a noisy machine can
    # still trip a timing). Either way the comparison ran end to end and wrote its report.
    assert r.returncode in (0, 3), f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr}"
    report = (root / "bench.json").read_text()
    assert "test_inference_batch_64" in report and "test_train_step_batch_64" in report
    assert "test_inference_batch_64" in (root / "bench.md").read_text()

    ok(modelkit("card", "runs/main", cwd=root, env=env))
    assert (root / "runs/main/README.md").is_file()

    registry = root.parent / "registry"
    ok(
        modelkit(
            "release",
            "v0.1.0",
            "--run",
            "runs/main",
            "--to",
            str(registry),
            "--allow-incomplete-card",
            cwd=root,
            env=env,
        )
    )

    ok(modelkit("verify", f"{registry}@v0.1.0", cwd=root, env=env))
