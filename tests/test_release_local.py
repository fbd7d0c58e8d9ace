"""`modelkit release` / `verify` against the local registry, loaded by stock huggingface_hub offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from release_helpers import copy_run, git_project


@pytest.fixture()
def proj(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    project = git_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    copy_run(trained_run, tmp_path, project=project)
    return tmp_path


def tree(path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_release_loads_with_stock_huggingface_hub_offline(cli, proj: Path) -> None:
    code, out, err = cli(
        "release", "v1.2", "--to", "registry", "--repo", "org/digits", "-f", "json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["version"] == "v1.2" and not report["already_released"]
    code = (
        "import torch\n"
        "from huggingface_hub import hf_hub_download\n"
        "from safetensors.torch import load_file\n"
        "from modelkit.models.mlp import MnistMLP\n"
        "p = hf_hub_download('org/digits', 'model.safetensors', revision='v1.2',"
        " cache_dir='registry', local_files_only=True)\n"
        "m = MnistMLP.from_pretrained('org/digits', revision='v1.2', cache_dir='registry',"
        " local_files_only=True)\n"
        "sd = load_file(p)\n"
        "assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())\n"
        "print('loaded', sum(v.numel() for v in sd.values()))\n"
    )
    env = {
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    import sys

    r = subprocess.run(
        [sys.executable, "-c", code], cwd=proj, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "loaded 109386" in r.stdout
    card = (
        proj / "registry/models--org--digits/snapshots" / report["commit"] / "README.md"
    ).read_text()
    registry = (proj / "registry").resolve()
    assert f'modelkit.load("{registry}", "v1.2", repo="org/digits")' in card  # pinned to the tag
    assert "hf://" not in card  # a local-registry card says how to load from the registry
    # verify (+ re-evaluation) passes; then tamper with a blob and it fails with exit 3
    code, out, err = cli("verify", "registry@v1.2", "--eval")
    assert code == 0, err
    blob = (
        proj / "registry/models--org--digits/snapshots" / report["commit"] / "config.json"
    ).resolve()
    blob.write_text(blob.read_text() + "\n")  # any byte changed
    code, _, err = cli("verify", "registry@v1.2")
    assert code == 3 and "config.json" in err and "sha256" in err


def test_dry_run_has_no_side_effects(cli, proj: Path) -> None:
    before = tree(proj)
    code, out, err = cli(
        "release", "v1.0", "--dry-run", "--to", "registry", "--repo", "org/d", "-f", "json"
    )
    assert code == 0, err
    plan = json.loads(out)
    storage = {f["path"]: f["storage"] for f in plan["files"]}
    assert storage["model.safetensors"] == "lfs" and storage["config.json"] == "regular"
    assert {"manifest.json", "README.md", "run.json", "eval.json"} <= set(storage)
    assert plan["tag"] == "v1.0" and plan["card_diff"][0].startswith("--- /dev/null")
    assert tree(proj) == before and not (proj / "registry").exists()
    code, out, _ = cli("release", "v1.0", "--dry-run", "--to", "registry", "--repo", "org/d")
    assert code == 0 and "model.safetensors" in out and "+++ release/README.md" in out


def test_tags_are_immutable_and_versions_increase(cli, proj: Path) -> None:
    assert cli("release", "v1.0", "--to", "registry", "--repo", "org/d")[0] == 0
    again = cli("release", "v1.0", "--to", "registry", "--repo", "org/d")  # identical: idempotent
    assert again[0] == 0 and "already released" in again[2]
    readme = proj / "runs/run/README.md"
    readme.write_text(readme.read_text() + "\nA change.\n")
    before = tree(proj / "registry")
    code, _, err = cli("release", "v1.0", "--to", "registry", "--repo", "org/d")
    assert code == 2 and "tag v1.0 already exists" in err
    code, _, err = cli("release", "v0.9", "--to", "registry", "--repo", "org/d")
    assert code == 2 and "not greater than the latest release v1.0" in err
    assert tree(proj / "registry") == before  # refused: nothing changed
    assert cli("release", "v1.0.1", "--to", "registry", "--repo", "org/d")[0] == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("1.2",), "invalid version '1.2'"),
        (("v1.2-beta",), "invalid version"),
        (("v1.0", "--to", "hf://bad--name/x"), "invalid repo id"),
        (("v1.0", "--to", "s3://bucket"), "unknown target"),
        (("v1.0", "--run", "runs/nope"), "run directory not found"),
    ],
)
def test_bad_input(cli, proj: Path, args: tuple[str, ...], needle: str) -> None:
    code, _, err = cli("release", *args)
    assert code == 2 and needle in err, err


def test_refusals_on_run_and_tree(cli, proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = proj / "runs/run"
    args = ("release", "v1.0", "--to", "registry", "--repo", "org/d")
    (proj / "pyproject.toml").write_text((proj / "pyproject.toml").read_text() + "# edit\n")
    code, _, err = cli(*args)
    assert code == 2 and "uncommitted changes" in err and "--allow-dirty" in err
    subprocess.run(["git", "-C", str(proj), "checkout", "pyproject.toml"], check=True)
    (run / "README.md").rename(run / "CARD.bak")
    code, _, err = cli(*args)
    assert code == 2 and "no model card" in err and "modelkit card" in err
    (run / "CARD.bak").rename(run / "README.md")
    text = (run / "README.md").read_text()
    (run / "README.md").write_text(text.replace("license: mit", "license: [1, 2]"))
    code, _, err = cli(*args)
    assert code == 2 and "metadata errors" in err and "license" in err
    (run / "README.md").write_text(text)
    eval_json = (run / "eval.json").read_bytes()
    (run / "eval.json").unlink()
    code, _, err = cli(*args)
    assert code == 2 and "eval.json" in err
    (run / "eval.json").write_bytes(eval_json)
    weights = bytearray((run / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (run / "model.safetensors").write_bytes(bytes(weights))
    code, _, err = cli(*args)
    assert code == 3 and "does not match run.json" in err  # a hash mismatch: exit 3
    assert not (proj / "registry").exists()
    code, _, err = cli("verify", "registry@v1.0", "--repo", "org/d")
    assert code == 3 and "no release v1.0" in err
    code, _, err = cli("verify", "registry")
    assert code == 2 and "TARGET@VERSION" in err


def test_background_hashing_gives_each_file_or_its_error_and_leaves_no_thread(
    tmp_path: Path,
) -> None:
    """A release hashes the weights in the background while it checks the card: each file
    comes back as if hashed in place, an unsafe or missing file raises where it is asked for,
    and leaving the block leaves no hashing thread behind."""
    import threading

    from modelkit.errors import UnsafeRunFile
    from modelkit.release.files import Hashing, disk_file

    (tmp_path / "a.safetensors").write_bytes(bytes(range(256)) * (40 << 10))  # 10 MiB
    (tmp_path / "b.json").write_text("{}")
    (tmp_path / "link.safetensors").symlink_to("a.safetensors")
    with Hashing(tmp_path, ["a.safetensors", "link.safetensors", "gone.safetensors"]) as h:
        assert h.file("a.safetensors") == disk_file(tmp_path, "a.safetensors")
        with pytest.raises(UnsafeRunFile, match="symbolic link"):
            h.file("link.safetensors")
        with pytest.raises(UnsafeRunFile, match="cannot be read"):
            h.file("gone.safetensors")
        (b,) = h.files(["b.json"])  # not queued: hashed now
        assert b.git_oid is not None and b == disk_file(tmp_path, "b.json")
    assert not [t for t in threading.enumerate() if t.name.startswith("modelkit-hash")]
