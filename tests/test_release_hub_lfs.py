"""Big Hub uploads (issue 21.3): a multi-shard release goes through the LFS batch API of the
local Hub server (``HF_HUB_DISABLE_XET=1``) with connections cut mid-upload. A cut-off
object is never stored; the release completes and verifies, uploading each object whole
exactly once; when the uploads keep failing the release fails with no commit and no tag, and a
re-run uploads only the objects that were not stored yet."""

from __future__ import annotations

import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from release_helpers import git_project
from test_weights import SHARD, TIED_MODULE

import modelkit
from modelkit.errors import ModelkitError
from modelkit.release import release
from modelkit.release.hub import RetryPolicy
from modelkit.testing.hubserver import HubServer

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
TOKEN = "hf_test_token"


@pytest.fixture()
def sharded(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A committed project with a sharded (>= 3 shards), evaluated, carded run; a Hub."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "tiedmodel.py").write_text(TIED_MODULE)
    project = git_project(root)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    sys.modules.pop("tiedmodel", None)
    import tiedmodel

    torch.manual_seed(0)
    model = tiedmodel.TiedNet()
    with modelkit.start_run("runs/tied", model=model, seed=0) as run:
        run.finish(model, metrics={"accuracy": 0.1}, max_shard_size=SHARD)
    assert cli("eval", "runs/tied", "--data", "digits")[0] == 0
    assert cli("card", "runs/tied")[0] == 0
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with HubServer(token=TOKEN) as hub:
        yield project, root / "runs/tied", hub


def _release(hub: HubServer, project, run: Path, attempts: int = 6):
    retry = RetryPolicy(attempts=attempts, base_s=0.02, max_s=0.2)
    return release("v1.0", run_dir=run, target="hf://org/tied", project=project,
                   endpoint=hub.url, retry=retry)  # fmt: skip


def _lfs_oids(hub: HubServer, version: str) -> set[str]:
    repo = hub.repos["org/tied"]
    return {e.sha256 for e in repo.commits[repo.tags[version]][1].values() if e.lfs}


def test_a_connection_cut_mid_upload_stores_nothing_and_the_release_completes(sharded) -> None:
    project, run, hub = sharded
    hub.fault_on = {"PUT /__lfs/": {2: "drop-mid"}}  # the second object's upload is cut off
    report = _release(hub, project, run)
    assert report.ok and report.version == "v1.0"
    shards = [f for f in report.files if f.path.startswith("model-")]
    assert len(shards) >= 3 and all(f.storage == "lfs" for f in shards)
    puts = [r for r in hub.requests if r.startswith("PUT /__lfs/")]
    assert len(puts) == len(set(hub.uploaded)) + 1  # one upload was cut, then made again
    assert sorted(hub.uploaded) == sorted(set(hub.uploaded)) == sorted(_lfs_oids(hub, "v1.0"))
    assert not list(hub.storage.glob(".up.*"))  # the cut-off part was not kept


@pytest.mark.slow  # huggingface_hub's own backoff on the failing PUT: ~25 s
def test_a_rerun_after_failed_uploads_sends_only_what_is_missing(sharded) -> None:
    project, run, hub = sharded
    victim = run / "model-00002-of-00003.safetensors"
    if not victim.exists():
        victim = sorted(run.glob("model-0000*-of-*.safetensors"))[1]
    import hashlib

    oid = hashlib.sha256(victim.read_bytes()).hexdigest()
    hub.fault_on = {f"PUT /__lfs/{oid}": {n: "drop-mid" for n in range(1, 50)}}
    with pytest.raises(ModelkitError) as err:
        _release(hub, project, run, attempts=1)
    assert "\n" not in err.value.message
    repo = hub.repos["org/tied"]
    assert repo.tags == {} and len(repo.commits) == 1  # nothing half-published
    first = set(hub.uploaded)
    assert oid not in first and first  # the other objects arrived whole
    hub.fault_on = {}
    hub.batches.clear()
    report = _release(hub, project, run)
    assert report.ok
    asked_again = {o for batch in hub.batches for o in batch}
    assert oid in asked_again and not asked_again & first  # finished files are not re-sent
    assert sorted(hub.uploaded) == sorted(_lfs_oids(hub, "v1.0"))
