"""Declared artifacts ship with a release (issue 20.4): a tokenizer trained here with
``tokenizers`` travels in the run (its ``artifacts/`` folder, run.json's ``artifacts``, or the
project's ``[tool.modelkit.release] include`` globs), is hashed into the manifest, and
``AutoTokenizer.from_pretrained`` on the released folder gives the same token ids."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from release_helpers import copy_run, git_project

from modelkit.errors import ConfigError, IntegrityError, RunDirError, UnsafeRunFile
from modelkit.project import Project
from modelkit.release import release, verify_release
from modelkit.release.local import LocalRegistry

TEXT = ["the cat sat on the mat", "a dog ran in the park", "the cat and the dog", "hello world"]
SAMPLE = "the dog sat on the mat hello"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level tokenizer trained here, saved the transformers way."""
    pytest.importorskip("transformers", reason="the transformers extra is not installed")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXT, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    out = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]"
    ).save_pretrained(out)
    return out


def _project(root: Path, include: list[str] | None) -> Project:
    git_project(root)
    if include is not None:
        text = (root / "pyproject.toml").read_text()
        (root / "pyproject.toml").write_text(
            text + f"\n[tool.modelkit.release]\ninclude = {json.dumps(include)}\n"
        )
        git = ["git", "-C", str(root), "-c", "user.email=t@example.com", "-c", "user.name=t"]
        subprocess.run([*git, "commit", "-qam", "include"], check=True)
    from modelkit.project import load_project

    return load_project(root)


def _ids(folder: Path) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))(SAMPLE)["input_ids"]


def _place_in_folder(run: Path, tok: Path) -> None:
    shutil.copytree(tok, run / "artifacts")


def _place_recorded(run: Path, tok: Path) -> None:
    """What ``run.add_artifact(path)`` leaves: the copy in artifacts/, its entry in run.json."""
    from modelkit.runs.artifacts import copy_artifact
    from modelkit.runs.layout import RunDir

    record = json.loads((run / "run.json").read_text())
    entries = [copy_artifact(p, RunDir(run), p.name).to_dict() for p in sorted(tok.iterdir())]
    record["artifacts"] = entries
    (run / "run.json").write_text(json.dumps(record, indent=2))


def _place_in_run_root(run: Path, tok: Path) -> None:
    for p in tok.iterdir():
        shutil.copy(p, run / p.name)


@pytest.mark.parametrize(
    ("place", "include"),
    [(_place_in_folder, None), (_place_recorded, None), (_place_in_run_root, ["tokenizer*.json", "special_tokens_map.json"])],
    ids=["artifacts-folder", "run.json-artifacts", "include-globs"],
)  # fmt: skip
def test_the_tokenizer_ships_and_loads_from_the_release(
    trained_run, tmp_path, monkeypatch, tokenizer_dir, place, include
) -> None:
    project = _project(tmp_path / "proj", include)
    monkeypatch.chdir(project.root)
    run = copy_run(trained_run, project.root, project=project)
    place(run, tokenizer_dir)
    report = release("v1.0", run_dir=run, target="registry", repo_id="org/x", project=project)
    reg = LocalRegistry(project.root / "registry", "org/x")
    snap = reg.snapshot("v1.0")
    manifest = json.loads((snap / "manifest.json").read_text())
    assert "tokenizer.json" in manifest["artifacts"] and "tokenizer.json" in manifest["files"]
    assert {"tokenizer.json", "tokenizer_config.json"} <= {f.path for f in report.files}
    assert _ids(snap) == _ids(tokenizer_dir) and len(_ids(snap)) == 7
    assert verify_release(reg, "v1.0", project=project).ok


def test_bad_declarations_are_refused(trained_run, tmp_path, monkeypatch) -> None:
    project = _project(tmp_path / "proj", None)
    monkeypatch.chdir(project.root)
    run = copy_run(trained_run, project.root, project=project)
    (run / "artifacts").mkdir()
    (run / "artifacts" / "config.json").write_text("{}")  # would replace the run's config
    with pytest.raises(RunDirError, match="would replace the release's own config.json"):
        release("v1.0", run_dir=run, target="registry", repo_id="org/x", project=project)
    shutil.rmtree(run / "artifacts")
    (tmp_path / "secret.txt").write_text("hf_notinthisrelease")
    (run / "artifacts").mkdir()
    (run / "artifacts" / "vocab.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(UnsafeRunFile, match="vocab.txt"):
        release("v1.0", run_dir=run, target="registry", repo_id="org/x", project=project)
    project.raw["release"] = {"include": "tokenizer.json"}  # a string, not a list
    shutil.rmtree(run / "artifacts")
    with pytest.raises(ConfigError, match="include must be a list"):
        release("v1.0", run_dir=run, target="registry", repo_id="org/x", project=project)
    assert not (project.root / "registry" / "models--org--x" / "refs").exists()


def test_a_recorded_artifact_changed_afterwards_is_refused(
    trained_run, tmp_path, monkeypatch, tokenizer_dir
) -> None:
    project = _project(tmp_path / "proj", None)
    monkeypatch.chdir(project.root)
    run = copy_run(trained_run, project.root, project=project)
    _place_recorded(run, tokenizer_dir)
    (run / "artifacts" / "tokenizer.json").write_text("{}")
    with pytest.raises(IntegrityError, match="tokenizer.json") as err:
        release("v1.0", run_dir=run, target="registry", repo_id="org/x", project=project)
    assert err.value.exit_code == 3
