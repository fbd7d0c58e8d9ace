"""Concurrent releases end in a consistent order or a clear refusal (issue 22.3).

Real threads and real processes release different versions of one run at once, to a local
registry (ordered under its lock) and to the local Hub server (ordered by the commit's
compare-and-swap on its parent). Whatever the interleaving: every release either succeeded or
was refused with one clear line (a version not above the latest); the versions along ``main``
only grow; ``main`` ends on the greatest released version; every tag names its own version.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import huggingface_hub.constants
import pytest
from release_helpers import copy_run, git_project

from modelkit.errors import BadInputError
from modelkit.release import release
from modelkit.release.hub import HubTarget, RetryPolicy
from modelkit.release.local import LocalRegistry
from modelkit.release.remote import main_version
from modelkit.testing.hubserver import HubServer

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
VERSIONS = ["v1.0", "v2.0", "v3.0"]
FAST = RetryPolicy(attempts=6, base_s=0.02, max_s=0.2)


@pytest.fixture()
def proj(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    project = git_project(tmp_path / "proj")
    monkeypatch.chdir(project.root)
    return project, copy_run(trained_run, project.root, project=project)


def _race(fn, versions: list[str]) -> dict[str, str]:
    """Run ``fn(version)`` in one thread per version, released by one barrier; ``{version:
    'ok' | the refusal's message}``."""
    barrier = threading.Barrier(len(versions))
    outcome: dict[str, str] = {}

    def one(version: str) -> None:
        barrier.wait()
        try:
            fn(version)
            outcome[version] = "ok"
        except BadInputError as exc:
            outcome[version] = exc.message

    threads = [threading.Thread(target=one, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return outcome


def _check_consistent(target, outcome: dict[str, str]) -> None:
    assert set(outcome) == set(VERSIONS), outcome  # no release died of anything else
    released = sorted(v for v, o in outcome.items() if o == "ok")
    assert released, outcome
    for o in outcome.values():  # a refusal is one clear line naming a greater release
        assert o == "ok" or ("not greater than the latest release" in o and "\n" not in o), o
    state = target.state()
    assert sorted(state.tags) == released
    assert main_version(target, state.head) == max(released, key=lambda v: float(v[1:]))
    for v in released:  # each tag holds its own version's manifest
        manifest = json.loads(target.read_file(state.tags[v], "manifest.json"))
        assert manifest["version"] == v


def test_threads_releasing_to_a_local_registry(proj) -> None:
    project, run = proj

    def go(version: str) -> None:
        release(version, run_dir=run, target="registry", repo_id="org/x", project=project)

    outcome = _race(go, VERSIONS)
    _check_consistent(LocalRegistry(project.root / "registry", "org/x"), outcome)


def _release_in_child(version: str, run: str, root: str, queue) -> None:
    from modelkit.project import Project

    try:
        release(version, run_dir=run, target=f"{root}/registry", repo_id="org/x",
                project=Project(root=Path(root)))  # fmt: skip
        queue.put((version, "ok"))
    except BadInputError as exc:
        queue.put((version, exc.message))


def test_processes_releasing_to_a_local_registry(proj) -> None:
    project, run = proj
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_release_in_child, args=(v, str(run), str(project.root), queue))
        for v in reversed(VERSIONS)
    ]
    for p in procs:
        p.start()
    outcome = dict(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    _check_consistent(LocalRegistry(project.root / "registry", "org/x"), outcome)


def test_threads_releasing_to_the_hub(proj, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    project, run = proj
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with HubServer(token="hf_test_token") as hub:

        def go(version: str) -> None:
            release(version, run_dir=run, target="hf://org/x", project=project,
                    endpoint=hub.url, retry=FAST)  # fmt: skip

        outcome = _race(go, VERSIONS)
        _check_consistent(HubTarget("org/x", endpoint=hub.url, retry=FAST), outcome)
        repo = hub.repos["org/x"]
        versions_on_main, commit = [], repo.branches["main"]
        while commit is not None:  # walk main: the manifest's version never goes down
            parent, files, _ = repo.commits[commit]
            if "manifest.json" in files:
                blob = hub.blob(files["manifest.json"].sha256)
                versions_on_main.append(float(json.loads(blob.read_text())["version"][1:]))
            commit = parent
        assert versions_on_main == sorted(versions_on_main, reverse=True)
