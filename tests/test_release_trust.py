"""Releases anyone can load and trust (issue 11), with a user's own plain ``nn.Module`` model.

A real project on disk (its own package under src/, its own data), trained, evaluated, carded
and released to a local registry by the real CLI; then loaded in a fresh process from another
directory, tampered with in the ways an attacker or an accident would, and verified.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from huggingface_hub.repocard_data import model_index_to_eval_results

REPO = Path(__file__).resolve().parents[1]

PYPROJECT = """
[project]
name = "tinyproj"
version = "0.0.1"
license = "MIT"

[tool.modelkit]
run = "runs/main"

[tool.modelkit.models]
tiny-net = "tinyproj.models:tiny_net"

[tool.modelkit.datasets]
blobs = "tinyproj.data:load_blobs"
shifted-blobs = "tinyproj.data:load_shifted"

[tool.modelkit.defaults]
model = "tiny-net"
data = "blobs"
epochs = 3
lr = 0.05
"""

MODELS = '''
"""A two-layer net for 1x4x4 inputs (a plain nn.Module: no Hub mixin)."""
from torch import nn

class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.ReLU(), nn.Linear(width, num_classes))
    def forward(self, x):
        return self.net(x)

def tiny_net(num_classes: int = 3, width: int = 16) -> TinyNet:
    return TinyNet(num_classes, width)
'''

DATA = '''
"""Three Gaussian blobs as 1x4x4 'images'; the shifted variant is other data."""
import torch
from modelkit.data.base import Dataset, fingerprint_tensors

def _blobs(shift: float, seed: int, spec: str) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(600) % 3
    x = torch.randn(600, 1, 4, 4, generator=g) * 0.3 + y.view(-1, 1, 1, 1).float() + shift
    return Dataset(spec=spec, x_train=x[:480], y_train=y[:480], x_test=x[480:], y_test=y[480:],
                   classes=["a", "b", "c"], fingerprint=fingerprint_tensors(x, y, extra=spec))

def load_blobs() -> Dataset:
    return _blobs(0.0, 0, "blobs")

def load_shifted() -> Dataset:
    return _blobs(0.8, 1, "shifted-blobs")
'''

PROSE = """---
base_model: none
---
Hand-written intro: a toy model for the release tests.

## Uses

For testing modelkit only. HAND-WRITTEN-USES.

## Bias, risks and ethical considerations

Synthetic data; no people involved. HAND-WRITTEN-ETHICS.

## Citation and contact

The modelkit maintainers. HAND-WRITTEN-CONTACT.

## Acknowledgements

Thanks to the reviewers. HAND-WRITTEN-EXTRA.
"""

GIT = ["-c", "user.email=t@example.com", "-c", "user.name=t"]


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *GIT, *args], check=True, capture_output=True)


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "tinyproj-repo"
    pkg = root / "src" / "tinyproj"
    pkg.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / ".gitignore").write_text("runs/\nregistry/\n")
    (root / "MODEL_CARD.md").write_text(PROSE)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent(MODELS))
    (pkg / "data.py").write_text(textwrap.dedent(DATA))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    monkeypatch.chdir(root)
    yield root
    for name in [m for m in sys.modules if m.startswith("tinyproj")]:
        del sys.modules[name]


def _train_eval_card(cli, *, overwrite: bool = False) -> None:
    args = ["train", "-q", "--out", "runs/main"] + (["--overwrite"] if overwrite else [])
    code, _, err = cli(*args)
    assert code == 0, err
    code, _, err = cli("eval", "runs/main")
    assert code == 0, err
    code, _, err = cli("card", "runs/main", "--strict")
    assert code == 0, err


def _fresh_python(code: str, *, cwd: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath),
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )


def _snapshot(root: Path, repo: str, version: str) -> Path:
    org, name = repo.split("/")
    commit = (root / "registry" / f"models--{org}--{name}" / "refs" / version).read_text()
    return root / "registry" / f"models--{org}--{name}" / "snapshots" / commit


def test_user_model_loads_anywhere_through_load_and_the_cards_snippet(
    cli, project: Path, tmp_path: Path
) -> None:
    _train_eval_card(cli)
    cfg = json.loads((project / "runs/main/config.json").read_text())
    assert cfg["modelkit"]["reference"]["ref"] == "tinyproj.models:tiny_net"
    assert cfg["modelkit"]["reference"]["kwargs"]["num_classes"] == 3
    code, out, err = cli("release", "v1.0", "--to", "registry", "--repo", "me/tiny", "-f", "json")
    assert code == 0, err
    assert json.loads(out)["ok"]

    card = (_snapshot(project, "me/tiny", "v1.0") / "README.md").read_text()
    usage = card.split("## How to use", 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    registry = str((project / "registry").resolve())
    assert f'modelkit.load("{registry}", "v1.0", repo="me/tiny")' in snippet
    assert "hf://" not in usage  # a local-registry card never points at the Hub
    assert f"modelkit verify {registry}@v1.0 --repo me/tiny" in usage

    import torch

    import modelkit

    x = torch.linspace(-1, 3, 5 * 16).view(5, 1, 4, 4)
    here = modelkit.load(project / "registry", "v1.0", repo="me/tiny")
    expected = here(x).argmax(1).tolist()
    assert type(here).__name__ == "TinyNet" and not hasattr(here, "from_pretrained")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the model's package is installed (on the path), the repository is not the cwd
    probe = (
        snippet
        + "\nimport torch\n"
        + "x = torch.linspace(-1, 3, 5 * 16).view(5, 1, 4, 4)\n"
        + "print(type(model).__name__, model(x).argmax(1).tolist())\n"
    )
    r = _fresh_python(probe, cwd=elsewhere, pythonpath=[project / "src", REPO])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"TinyNet {expected}"
    # the run directory and the Hub-style snapshot folder load the same way
    r = _fresh_python(
        "import modelkit, torch\n"
        f"m = modelkit.load({str(project / 'runs/main')!r})\n"
        "x = torch.linspace(-1, 3, 5 * 16).view(5, 1, 4, 4)\n"
        "print(m(x).argmax(1).tolist())\n",
        cwd=elsewhere,
        pythonpath=[project / "src", REPO],
    )
    assert r.returncode == 0 and r.stdout.strip() == str(expected), r.stderr
    # verify from another directory (no pyproject there): it loads through the reference
    old = Path.cwd()
    os.chdir(elsewhere)
    try:
        code, out, err = cli("verify", f"{project / 'registry'}@v1.0", "-f", "json")
    finally:
        os.chdir(old)
    assert code == 0, err
    checks = json.loads(out)["checks"]
    assert any("rebuilds from tinyproj.models:tiny_net" in c for c in checks)
    assert any("run.json weights_sha256 == manifest" in c for c in checks)
    # without the model's package, loading says which package to install (exit 2)
    r = _fresh_python(snippet, cwd=elsewhere, pythonpath=[REPO])
    assert r.returncode == 1 and "cannot import model 'tinyproj.models:tiny_net'" in r.stderr


def test_card_prose_lives_in_the_repo_and_survives_retraining(cli, project: Path) -> None:
    _train_eval_card(cli)
    first = (project / "runs/main/README.md").read_text()
    _train_eval_card(cli, overwrite=True)  # retrain into the same run dir, then re-card
    card = (project / "runs/main/README.md").read_text()
    for marker in ("USES", "ETHICS", "CONTACT", "EXTRA"):
        assert f"HAND-WRITTEN-{marker}" in card
    assert "Hand-written intro" in card and "modelkit:todo" not in card
    assert "[More Information Needed]" not in card and "None" not in card
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "none" and meta["license"] == "mit"
    assert "https://github.com/)" not in card and str(project) not in card  # no local paths
    assert first.count("HAND-WRITTEN-USES") == card.count("HAND-WRITTEN-USES") == 1
    # an unfilled section blocks the release, named; --allow-incomplete-card overrides
    prose = project / "MODEL_CARD.md"
    prose.write_text(prose.read_text().replace("HAND-WRITTEN-ETHICS.", "[More Information Needed]"))
    _git(project, "commit", "-qam", "unfinished ethics section")
    assert cli("card", "runs/main")[0] == 0
    code, _, err = cli("release", "v1.0", "--to", "registry", "--repo", "me/tiny")
    assert code == 2 and "unfilled sections: Bias, risks and ethical considerations" in err
    assert "--allow-incomplete-card" in err and not (project / "registry").exists()
    code, _, err = cli(
        "release", "v1.0", "--to", "registry", "--repo", "me/tiny", "--allow-incomplete-card"
    )
    assert code == 0, err


def test_eval_on_other_data_never_reaches_the_training_datasets_results(cli, project: Path) -> None:
    _train_eval_card(cli)
    run = project / "runs/main"
    held_out = json.loads((run / "eval.json").read_text())
    code, out, err = cli("eval", "runs/main", "--data", "shifted-blobs", "-f", "json")
    assert code == 0, err
    other = json.loads(out)
    assert Path(other["path"]) == Path("runs/main/evals/shifted-blobs.json")
    assert json.loads((run / "eval.json").read_text()) == held_out  # untouched
    assert other["accuracy"] != held_out["accuracy"]
    code, _, err = cli("card", "runs/main", "--repo", "me/tiny")
    assert code == 0, err
    card = (run / "README.md").read_text()
    _, results = model_index_to_eval_results(yaml.safe_load(card.split("---\n")[1])["model-index"])
    by_dataset: dict[str, dict[str, float]] = {}
    for r in results:
        by_dataset.setdefault(r.dataset_name, {})[r.metric_type] = r.metric_value
    assert by_dataset["blobs (held-out split)"]["accuracy"] == round(held_out["accuracy"], 6)
    assert by_dataset["shifted-blobs (held-out split)"]["accuracy"] == round(other["accuracy"], 6)
    assert {r.dataset_type for r in results if r.dataset_name.startswith("shifted")} == {
        "shifted-blobs"
    }
    assert "### On other data: `shifted-blobs`" in card
    # the release carries it as its own file
    code, out, err = cli("release", "v1.0", "--to", "registry", "--repo", "me/tiny", "-f", "json")
    assert code == 0, err
    assert (_snapshot(project, "me/tiny", "v1.0") / "evals/shifted-blobs.json").is_file()


def _regenerate_manifest(snapshot: Path) -> None:
    """What a consistent attacker does: rewrite manifest.json to match the files now there."""
    from modelkit.release.package import hash_file

    manifest = json.loads((snapshot / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        sha, size = hash_file(snapshot / name)
        entry.update(sha256=sha, size=size)
        entry.pop("git_oid", None)
    manifest["run"]["weights_sha256"] = manifest["files"]["model.safetensors"]["sha256"]
    _replace(snapshot / "manifest.json", json.dumps(manifest, sort_keys=True, indent=2).encode())


def _replace(link: Path, data: bytes) -> None:
    link.unlink()  # the snapshot entry is a symlink into blobs/: replace the entry itself
    link.write_bytes(data)


def test_swapped_weights_and_moved_tags_fail_verify(cli, project: Path) -> None:
    import torch
    from safetensors.torch import save_model

    _train_eval_card(cli)
    assert cli("release", "v1.0", "--to", "registry", "--repo", "me/tiny")[0] == 0
    snap = _snapshot(project, "me/tiny", "v1.0")
    # other weights of the same shape, and a manifest regenerated to match them
    model = _load(snap)
    model.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()})
    swapped = project / "swapped.safetensors"
    save_model(model, str(swapped), metadata={"format": "pt"})
    _replace(snap / "model.safetensors", swapped.read_bytes())
    _regenerate_manifest(snap)
    code, _, err = cli("verify", "registry@v1.0")
    assert code == 3 and "model.safetensors sha256" in err and "run.json" in err, err
    # ...and even with run.json rewritten too, the release record's manifest sha256 differs
    record = json.loads((snap / "run.json").read_text())
    record["weights_sha256"] = json.loads((snap / "manifest.json").read_text())["run"][
        "weights_sha256"
    ]
    _replace(snap / "run.json", json.dumps(record).encode())
    _regenerate_manifest(snap)
    code, _, err = cli("verify", "registry@v1.0")
    assert code == 3 and "differs from the one recorded at release time" in err, err


def _load(snapshot: Path):
    from modelkit.models.weights import load_model_from_dir

    return load_model_from_dir(snapshot)[0]


def test_a_moved_tag_fails_verify(cli, project: Path) -> None:
    _train_eval_card(cli)
    assert cli("release", "v1.0", "--to", "registry", "--repo", "me/tiny")[0] == 0
    assert cli("release", "v1.1", "--to", "registry", "--repo", "me/tiny", "--allow-dirty")[0] == 0
    refs = project / "registry/models--me--tiny/refs"
    v11 = (refs / "v1.1").read_text()
    code, out, err = cli("verify", "registry@v1.0", "-f", "json")
    assert code == 0, err
    assert any("the commit recorded at release time" in c for c in json.loads(out)["checks"])
    # re-create v1.0 on another commit (what `git tag -f` / delete + create does on a Hub)
    (refs / "v1.0").unlink()
    (refs / "v1.0").write_text(v11)
    code, _, err = cli("verify", "registry@v1.0")
    assert code == 3 and "tag v1.0 points at" in err and "moved or re-created" in err


def test_an_unreadable_release_record_is_a_failed_check(cli, project: Path) -> None:
    _train_eval_card(cli)
    assert cli("release", "v1.0", "--to", "registry", "--repo", "me/tiny")[0] == 0
    record = project / "registry/models--me--tiny/releases/v1.0.json"
    for content, needle in [
        (b"nope", "v1.0.json is not JSON"),
        (b'{"commit": 5}', "field 'commit' must be a string"),
        (b"[1]", "must be an object"),
    ]:
        record.write_bytes(content)
        code, _, err = cli("verify", "registry@v1.0")
        assert code == 3 and "release record: " in err and needle in err, err
        assert "Traceback" not in err


def test_signed_release_verifies_and_tampering_fails(cli, project: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    keys = tmp_path / "keys"
    keys.mkdir()
    pems = {}
    for who in ("maintainer", "stranger"):
        key = ec.generate_private_key(ec.SECP256R1())
        (keys / f"{who}.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pems[who] = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (keys / f"{who}.pub").write_bytes(pems[who])
    from modelkit.release.signing import fingerprint

    _train_eval_card(cli)
    private = (keys / "maintainer.pem").read_bytes()
    code, out, err = cli(
        "release", "v1.0", "--to", "registry", "--repo", "me/tiny",
        "--sign-key", keys / "maintainer.pem", "-f", "json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["signer"] == fingerprint(pems["maintainer"])
    assert private.decode() not in out + err  # the key never shows
    registry = project / "registry"
    stored = b"".join(p.read_bytes() for p in registry.rglob("*") if p.is_file())
    assert private.strip() not in stored
    snap = _snapshot(project, "me/tiny", "v1.0")
    assert (snap / "manifest.sig").is_file() and (snap / "signer.pub").read_bytes() == pems[
        "maintainer"
    ]
    code, out, err = cli(
        "verify", "registry@v1.0", "--public-key", keys / "maintainer.pub", "--require-signature"
    )
    assert code == 0, err
    assert f"signed by {fingerprint(pems['maintainer'])}" in err + out
    # signed by someone else than the key the user trusts
    code, _, err = cli("verify", "registry@v1.0", "--public-key", keys / "stranger.pub")
    assert code == 3 and "not by the trusted key" in err
    # tampering: any change to the manifest breaks the signature
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["created_by"] = "someone else"
    _replace(snap / "manifest.json", json.dumps(manifest, sort_keys=True, indent=2).encode())
    code, _, err = cli("verify", "registry@v1.0")
    assert code == 3 and "recorded at release time" in err, err
    # with the release record gone too, the signature alone catches it
    (registry / "models--me--tiny/releases/v1.0.json").unlink()
    code, _, err = cli("verify", "registry@v1.0")
    assert code == 3 and "signature does not match the manifest" in err, err
    # an unsigned release fails --require-signature
    assert cli("release", "v1.1", "--to", "registry", "--repo", "me/tiny", "--allow-dirty")[0] == 0
    code, _, err = cli("verify", "registry@v1.1", "--require-signature")
    assert code == 3 and "not signed" in err
    # a key that is not an EC private key is refused before anything is written
    (keys / "junk.pem").write_text("not a key")
    code, _, err = cli(
        "release", "v1.2", "--to", "registry", "--repo", "me/tiny", "--sign-key",
        keys / "junk.pem", "--allow-dirty",
    )  # fmt: skip
    assert code == 2 and "not a PEM private key" in err
    assert "v1.2" not in os.listdir(registry / "models--me--tiny/refs")


def test_a_killed_release_leaves_no_version_and_is_cleaned(cli, project: Path) -> None:
    _train_eval_card(cli)
    assert cli("release", "v1.0", "--to", "registry", "--repo", "me/tiny")[0] == 0
    repo = project / "registry/models--me--tiny"
    # what a release killed mid-write left behind (old and new layouts)
    (repo / "refs/.ref.abc123").write_text("0" * 40)
    (repo / "refs/v9.9").write_text("not a commit")
    (repo / ".tmp").mkdir(exist_ok=True)
    (repo / ".tmp/blob-xyz").write_bytes(b"partial")
    (repo / "blobs/.blob.old").write_bytes(b"partial")
    code, _, err = cli("verify", "registry@v1.1")
    assert code == 3 and "released versions: v1.0" in err  # no .ref.abc123, no v9.9
    assert cli("release", "v1.1", "--to", "registry", "--repo", "me/tiny", "--allow-dirty")[0] == 0
    assert not (repo / "refs/.ref.abc123").exists() and not (repo / "blobs/.blob.old").exists()
    assert list((repo / ".tmp").iterdir()) == []


def test_init_creates_the_card_prose_file(cli, in_tmp: Path) -> None:
    code, _, err = cli("init", "my-model", "--no-git")
    assert code == 0, err
    prose = (in_tmp / "my-model" / "MODEL_CARD.md").read_text()
    assert "## Uses" in prose and "<!-- modelkit:todo uses -->" in prose
    from modelkit.card import read_prose
    from modelkit.project import Project

    parsed = read_prose(Project(root=in_tmp / "my-model"))
    assert parsed is not None and parsed.intro == ""  # its instructions stay out of the card
    assert set(parsed.sections) == {
        "Uses",
        "Bias, risks and ethical considerations",
        "Citation and contact",
    }
    assert all("[More Information Needed]" in text for text in parsed.sections.values())


def test_load_checks_the_weights_and_reads_old_runs(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    import torch

    import modelkit
    from modelkit.errors import BadInputError, CheckFailed

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    x = torch.rand(2, 1, 28, 28)
    expected = modelkit.load(run)(x)
    # a run written before references existed loads through its registry name
    cfg = json.loads((run / "config.json").read_text())
    del cfg["modelkit"]["reference"]
    (run / "config.json").write_text(json.dumps(cfg))
    assert torch.equal(modelkit.load(run)(x), expected)
    # weights that are not the recorded ones are refused before loading
    weights = bytearray((run / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (run / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(CheckFailed, match="does not match run.json") as e:
        modelkit.load(run)
    assert e.value.exit_code == 3
    with pytest.raises(BadInputError, match="has no revisions"):
        modelkit.load(run, "v1.0")
    with pytest.raises(BadInputError, match="not found"):
        modelkit.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("digits", "digits"),
        ("mnist:/home/me/data/mnist", "mnist"),
        ("mnist:/home/me/data/other-mnist/", "other-mnist"),
        ("imagefolder:C:\\data\\catsdogs", "catsdogs"),
        ("tinyproj.data:load_blobs", "load_blobs"),
        (None, "unknown"),
    ],
)
def test_datasets_are_named_without_their_paths(spec: str | None, name: str) -> None:
    from modelkit.card.facts import dataset_name, other_data_name

    assert dataset_name(spec) == name
    # other data that happens to share the training data's name gets its own name
    other = other_data_name(spec, "sha256:0123456789abcdef", training=spec)
    assert other == f"{name}-01234567" and other != dataset_name(spec)
