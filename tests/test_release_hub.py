"""Hub releases against a real local Hub-compatible HTTP server, driven by stock huggingface_hub.

The fault-injection suite: for every request position of a clean release, a 500, a 429 with
Retry-After, a dropped connection before the request is handled, and one after it was handled
(the ambiguous case). Every time, the release completes and verifies, or no tag exists and a
re-run completes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import huggingface_hub.constants
import pytest
from release_helpers import copy_run, git_project

from modelkit.errors import ModelkitError
from modelkit.release import release
from modelkit.release.hub import RetryPolicy
from modelkit.testing.hubserver import HubServer

# huggingface_hub's own LFS PUT passes data=<file>; httpx2 warns about it
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
TOKEN = "hf_test_token"
FAST = RetryPolicy(attempts=6, base_s=0.02, max_s=0.2)


@pytest.fixture()
def hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # what HF_HUB_DISABLE_XET=1 sets at import time (the subprocess tests pass the env var itself)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with HubServer(token=TOKEN) as hub:
        yield hub


@pytest.fixture()
def proj(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    project = git_project(tmp_path / "proj")
    monkeypatch.chdir(project.root)
    run = copy_run(trained_run, project.root, project=project)
    return project, run


def _release(hub: HubServer, project, run: Path, version: str = "v1.0", **kw):
    return release(
        version, run_dir=run, target="hf://org/digits", project=project, endpoint=hub.url,
        retry=FAST, **kw,
    )  # fmt: skip


def test_release_through_the_cli_and_verify_catches_tampering(hub_env: HubServer, proj) -> None:
    project, run = proj
    env = dict(os.environ, HF_ENDPOINT=hub_env.url, MODELKIT_RETRY_BASE_S="0.02")
    cmd = [sys.executable, "-m", "modelkit"]
    r = subprocess.run([*cmd, "release", "v1.2", "--run", str(run), "--to", "hf://org/digits"],
                       env=env, capture_output=True, text=True, cwd=project.root)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert TOKEN not in r.stdout + r.stderr  # never printed
    repo = hub_env.repos["org/digits"]
    commit = repo.tags["v1.2"]
    files = repo.commits[commit][1]
    assert {"model.safetensors", "README.md", "manifest.json", "config.json"} <= set(files)
    assert files["model.safetensors"].lfs and not files["config.json"].lfs
    # one atomic release commit (tagged), then the release record on main on top of it
    head = repo.branches["main"]
    parent, head_files, _ = repo.commits[head]
    assert parent == commit and set(head_files) - set(files) == {".modelkit/releases/v1.2.json"}
    assert len(repo.commits) == 3  # the initial commit, the release, the record
    r = subprocess.run([*cmd, "verify", "hf://org/digits@v1.2"], env=env,
                       capture_output=True, text=True, cwd=project.root)  # fmt: skip
    assert r.returncode == 0, r.stderr
    hub_env.tamper("org/digits", "v1.2", "run.json", b'{"tampered": true}\n'.ljust(1679))
    r = subprocess.run([*cmd, "verify", "hf://org/digits@v1.2"], env=env,
                       capture_output=True, text=True, cwd=project.root)  # fmt: skip
    assert r.returncode == 3 and "run.json" in r.stderr, r.stderr


def test_missing_token_says_how_to_log_in(proj, tmp_path: Path) -> None:
    project, run = proj
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(HF_HOME=str(tmp_path / "empty-home"), HF_ENDPOINT="http://127.0.0.1:9")
    r = subprocess.run([sys.executable, "-m", "modelkit", "release", "v1.0", "--to", "hf://org/x"],
                       env=env, capture_output=True, text=True, cwd=project.root)  # fmt: skip
    assert r.returncode == 2 and "no Hugging Face token" in r.stderr and "hf auth login" in r.stderr


def test_existing_tag_and_lower_version_are_refused(hub_env: HubServer, proj) -> None:
    project, run = proj
    _release(hub_env, project, run, "v1.0")
    readme = run / "README.md"
    readme.write_text(readme.read_text() + "\nchanged\n")
    snapshot = json.dumps(
        {k: (v.branches, v.tags, sorted(v.commits)) for k, v in hub_env.repos.items()}
    )
    with pytest.raises(ModelkitError, match="tag v1.0 already exists") as e:
        _release(hub_env, project, run, "v1.0")
    assert e.value.exit_code == 2
    with pytest.raises(ModelkitError, match="not greater than the latest release v1.0"):
        _release(hub_env, project, run, "v0.9")
    after = json.dumps(
        {k: (v.branches, v.tags, sorted(v.commits)) for k, v in hub_env.repos.items()}
    )
    assert after == snapshot  # remote unchanged
    plan = _release(hub_env, project, run, "v1.1", dry_run=True)
    assert any(line == "+changed" for line in plan.card_diff) and after == json.dumps(
        {k: (v.branches, v.tags, sorted(v.commits)) for k, v in hub_env.repos.items()}
    )
    assert _release(hub_env, project, run, "v1.1").ok


def _scenario(project, run: Path, position: int, kind: str) -> tuple[int, str, str]:
    with HubServer(token=TOKEN) as hub:
        hub.faults = {position: kind}
        hub.retry_after = 0
        try:
            report = _release(hub, project, run)
            assert report.ok and hub.repos["org/digits"].tags["v1.0"] == report.commit
            return position, kind, "completed" + " ".join(report.log)
        except ModelkitError:
            repo = hub.repos.get("org/digits")
            assert repo is None or "v1.0" not in repo.tags, f"{kind}@{position}: failed with a tag"
            hub.faults = {}
            assert _release(hub, project, run).ok
            return position, kind, "re-run completed"


def test_fault_injection_at_every_request_position(hub_env: HubServer, proj) -> None:
    project, run = proj
    report = _release(hub_env, project, run)  # a clean release: count its requests
    assert report.ok
    n = len(hub_env.requests)
    assert n >= 20
    kinds = ("500", "429", "drop", "drop-after")
    jobs = [(p, k) for k in kinds for p in range(1, n + 1)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(lambda j: _scenario(project, run, *j), jobs))
    assert len(outcomes) == len(jobs)
    print(
        {k: sum(1 for o in outcomes if o[1] == k and o[2].startswith("completed")) for k in kinds}
    )
    # the ambiguous cases were recognised, not repeated: the commit and the tag that had landed
    landed = " ".join(o[2] for o in outcomes if o[1] == "drop-after")
    assert "commit: it had landed" in landed and "create tag: it had landed" in landed


def test_a_recreated_hub_tag_fails_verify(hub_env: HubServer, proj) -> None:
    project, run = proj
    first = _release(hub_env, project, run, "v1.0")
    second = _release(hub_env, project, run, "v1.1")
    assert "the commit recorded at release time" in " ".join(first.checks)
    repo = hub_env.repos["org/digits"]
    repo.tags["v1.0"] = second.commit  # the tag deleted and created again elsewhere
    from modelkit.errors import CheckFailed
    from modelkit.release.hub import HubTarget
    from modelkit.release.verify import verify_release

    target = HubTarget("org/digits", endpoint=hub_env.url, retry=FAST)
    with pytest.raises(CheckFailed, match="tag v1.0 points at .* moved or re-created") as e:
        verify_release(target, "v1.0", project=project)
    assert e.value.exit_code == 3


def test_modelkit_load_from_the_hub(hub_env: HubServer, proj, monkeypatch) -> None:
    import torch

    import modelkit

    project, run = proj
    report = _release(hub_env, project, run, "v1.0")
    monkeypatch.setenv("HF_ENDPOINT", hub_env.url)
    model = modelkit.load("hf://org/digits", "v1.0")
    local = modelkit.load(run)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), local(x)) and report.commit
    from modelkit.loading import resolve_directory

    card = (resolve_directory("hf://org/digits", "v1.0") / "README.md").read_text()
    assert 'model = modelkit.load("hf://org/digits", "v1.0")' in card  # the Hub's own snippet
    assert "modelkit verify hf://org/digits@v1.0" in card and "local_files_only" not in card


def test_signed_hub_release_verifies_and_a_tampered_one_fails(
    hub_env: HubServer, proj, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from modelkit.errors import CheckFailed
    from modelkit.release.hub import HubTarget
    from modelkit.release.signing import fingerprint
    from modelkit.release.verify import verify_release

    key = ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path / "release.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    project, run = proj
    report = _release(hub_env, project, run, "v1.0", sign_key=pem)
    assert report.signer == fingerprint(public)
    target = HubTarget("org/digits", endpoint=hub_env.url, retry=FAST)
    again = verify_release(target, "v1.0", project=project, public_key=public)
    assert again.signer == fingerprint(public)
    manifest = json.loads(target.read_file("v1.0", "manifest.json"))
    manifest["created_by"] = "someone else"
    hub_env.tamper("org/digits", "v1.0", "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(CheckFailed) as e:
        verify_release(target, "v1.0", project=project, public_key=public)
    assert e.value.exit_code == 3
