"""`modelkit init`: what it writes, and every way it refuses bad input without half-writing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelkit.config import tomllib
from modelkit.errors import BadInputError
from modelkit.scaffold import modelkit_requirement, render_templates, validate_name

EXPECTED = {
    "pyproject.toml",
    "README.md",
    "CONTRIBUTING.md",
    "Makefile",
    ".gitignore",
    ".pre-commit-config.yaml",
    ".github/workflows/ci.yml",
    ".github/workflows/pr-benchmark.yml",
    ".github/workflows/release.yml",
    ".github/actionlint.yaml",
    ".github/pull_request_template.md",
    ".github/ISSUE_TEMPLATE/bug_report.md",
    "configs/smoke.toml",
    "src/digit_net/__init__.py",
    "src/digit_net/model.py",
    "tests/test_model.py",
    "benchmarks/test_speed.py",
}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), .git excluded."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


@pytest.fixture()
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A throwaway git identity (no global or system config leaks in)."""
    cfg = tmp_path / "gitconfig"
    cfg.write_text("[user]\n\tname = modelkit test\n\temail = test@modelkit.invalid\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.mark.parametrize(
    ("name", "package"),
    [("digit-net", "digit_net"), ("MyModel", "mymodel"), ("a.b_c2", "a_b_c2"), ("x", "x")],
)
def test_valid_names(name: str, package: str) -> None:
    assert validate_name(name) == package


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("2net", "invalid project name"),
        ("my net", "invalid project name"),
        ("-net", "invalid project name"),
        ("a--b", "invalid project name"),
        ("net-", "invalid project name"),
        ("", "invalid project name"),
        ("class", "not a valid Python name"),
        ("torch", "shadow"),
        ("modelkit", "shadow"),
        ("tests", "shadow"),
    ],
)
def test_invalid_names(name: str, why: str) -> None:
    with pytest.raises(BadInputError, match=why):
        validate_name(name)


def test_init_writes_a_complete_repository(in_tmp: Path, git_env: None, cli) -> None:
    code, out, err = cli("init", "digit-net", "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    root = in_tmp / "digit-net"
    files = tree(root)
    assert set(files) >= EXPECTED and set(result["created"]) == set(files)
    assert result["name"] == "digit-net" and result["package"] == "digit_net"
    for rel, data in files.items():  # every placeholder was filled
        assert not re.search(rb"\{\{[a-z_]+\}\}", data), rel
    py = tomllib.loads(files["pyproject.toml"].decode())
    assert py["project"]["name"] == "digit-net"
    assert py["tool"]["modelkit"]["models"] == {"digit-net": "digit_net.model:build"}
    assert py["tool"]["modelkit"]["defaults"]["model"] == "digit-net"
    assert py["project"]["dependencies"] == [modelkit_requirement()]
    model = files["src/digit_net/model.py"].decode()
    assert "class DigitNet(" in model and "PyTorchModelHubMixin" in model
    compile(model, "model.py", "exec")
    assert "make run" in files["README.md"].decode() and "make test" in files["README.md"].decode()
    # git: a fresh repository with one commit holding exactly these files
    assert result["git"] == {"initialised": True, "committed": True, "note": ""}
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=root, capture_output=True, text=True, check=True
    )
    assert log.stdout.strip() == "Initial commit: modelkit init"
    listed = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(listed) == set(files)
    assert oct(root.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_text_output_and_name_option(in_tmp: Path, cli) -> None:
    code, _, err = cli("init", "repos/x", "--name", "my-model", "--no-git")
    assert code == 0, err
    assert "created my-model (package my_model)" in err and "next: cd repos/x" in err
    assert (in_tmp / "repos/x/src/my_model/model.py").is_file()
    assert not (in_tmp / "repos/x/.git").exists()


def test_requirement_option(in_tmp: Path, cli) -> None:
    code, _, err = cli("init", "m", "--no-git", "--modelkit-requirement", "modelkit==9.9")
    assert code == 0, err
    py = tomllib.loads((in_tmp / "m/pyproject.toml").read_text())
    assert py["project"]["dependencies"] == ["modelkit==9.9"]


def test_default_requirement_names_where_modelkit_came_from() -> None:
    req = modelkit_requirement()
    assert re.fullmatch(r"modelkit( @ (file://|[a-z]+\+).+|>=[0-9].*)", req), req


def test_non_empty_target_is_refused(in_tmp: Path, cli) -> None:
    (in_tmp / "p").mkdir()
    (in_tmp / "p" / "notes.txt").write_text("mine")
    code, _, err = cli("init", "p", "--name", "pp")
    assert code == 2 and "is not empty" in err and "--force" in err
    assert tree(in_tmp / "p") == {"notes.txt": b"mine"}


def test_force_never_overwrites(in_tmp: Path, cli) -> None:
    root = in_tmp / "p"
    (root / "src" / "pp").mkdir(parents=True)
    (root / "README.md").write_text("my readme\n")
    (root / "src" / "pp" / "model.py").write_text("# my model\n")
    code, out, err = cli("init", "p", "--name", "pp", "--force", "--no-git", "-f", "json")
    assert code == 0, err
    result = json.loads(out)
    assert result["kept"] == ["README.md", "src/pp/model.py"]
    assert (root / "README.md").read_text() == "my readme\n"
    assert (root / "src/pp/model.py").read_text() == "# my model\n"
    assert (root / "pyproject.toml").is_file() and "README.md" not in result["created"]
    # and the text output says what it kept
    (root / "Makefile").unlink()
    code, _, err = cli("init", "p", "--name", "pp", "--force", "--no-git")
    assert code == 0 and "kept your existing README.md" in err
    assert (root / "Makefile").is_file()


def test_force_into_an_existing_git_repo_leaves_git_alone(in_tmp: Path, git_env: None, cli) -> None:
    root = in_tmp / "r"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "keep.txt").write_text("x")
    code, out, err = cli("init", "r", "--force", "-f", "json")
    assert code == 0, err
    assert "already inside a git repository" in json.loads(out)["git"]["note"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True)
    assert head.returncode != 0  # no commit was made in the user's repository


def test_force_commits_only_what_init_wrote(in_tmp: Path, git_env: None, cli) -> None:
    root = in_tmp / "p"
    root.mkdir()
    (root / "data.bin").write_bytes(b"\0" * 10)
    (root / "README.md").write_text("mine\n")
    code, out, err = cli("init", "p", "--name", "pp", "--force", "-f", "json")
    assert code == 0, err
    result = json.loads(out)
    assert result["git"]["committed"] and result["kept"] == ["README.md"]
    listed = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(listed) == set(result["created"])  # not data.bin, not the kept README.md


def test_file_in_the_way_of_a_directory_writes_nothing(in_tmp: Path, cli) -> None:
    root = in_tmp / "p"
    root.mkdir()
    (root / "src").write_text("a file, not a directory")
    code, _, err = cli("init", "p", "--name", "pp", "--force", "--no-git")
    assert code == 2 and "is a file where the scaffold puts a directory" in err
    assert tree(root) == {"src": b"a file, not a directory"}


def test_directory_in_the_way_of_a_file_writes_nothing(in_tmp: Path, cli) -> None:
    root = in_tmp / "p"
    (root / "Makefile").mkdir(parents=True)
    code, _, err = cli("init", "p", "--name", "pp", "--force", "--no-git")
    assert code == 2 and "is a directory where the scaffold puts a file" in err
    assert tree(root) == {} and not any(p.name.startswith(".modelkit") for p in root.iterdir())


@pytest.mark.parametrize("bad", ["2net", "my net", "class"])
def test_invalid_name_writes_nothing(in_tmp: Path, cli, bad: str) -> None:
    code, _, err = cli("init", "p", "--name", bad)
    assert code == 2 and "hint:" in err
    assert not (in_tmp / "p").exists()


def test_directory_name_is_checked_when_no_name_given(in_tmp: Path, cli) -> None:
    code, _, err = cli("init", "my model")
    assert code == 2 and "invalid project name 'my model'" in err and "--name" in err
    assert list(in_tmp.iterdir()) == []


def test_target_is_a_file(in_tmp: Path, cli) -> None:
    (in_tmp / "f").write_text("x")
    code, _, err = cli("init", "f", "--name", "ff")
    assert code == 2 and "exists and is not a directory" in err
    code, _, err = cli("init", "f/sub", "--name", "ff")
    assert code == 2 and "is a file, not a directory" in err
    assert (in_tmp / "f").read_text() == "x"


def test_unwritable_target(tmp_path: Path, cli) -> None:
    if os.geteuid() == 0:  # root writes anywhere a mode allows; sysfs refuses even root
        parent = Path("/sys")
        if not parent.is_dir() or os.access(parent, os.W_OK) and _can_create(parent):
            pytest.skip("no directory here refuses root")
    else:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
    target = parent / "modelkit-init-test"
    code, _, err = cli("init", str(target), "--name", "ro-test")
    assert code == 2 and "is not writable" in err
    assert not target.exists()


def _can_create(parent: Path) -> bool:
    try:
        (parent / ".modelkit-probe").mkdir()
    except OSError:
        return False
    (parent / ".modelkit-probe").rmdir()
    return True


def test_parent_directories_are_created(in_tmp: Path, cli) -> None:
    code, _, err = cli("init", "a/b/c/net", "--no-git")
    assert code == 0, err
    assert (in_tmp / "a/b/c/net/pyproject.toml").is_file()
    assert not [p for p in (in_tmp / "a/b/c").iterdir() if p.name.startswith(".modelkit")]


def test_templates_render_for_any_valid_name() -> None:
    files = render_templates(
        {
            "name": "A.b-c",
            "package": "a_b_c",
            "class_name": "ABC",
            "modelkit_requirement": "modelkit",
            "modelkit_version": "0",
        }
    )
    assert "src/a_b_c/model.py" in files and "class ABC(" in files["src/a_b_c/model.py"]
    compile(files["tests/test_model.py"], "t", "exec")
    compile(files["benchmarks/test_speed.py"], "b", "exec")
    tomllib.loads(files["pyproject.toml"])


def test_help_has_examples(cli) -> None:
    code, out, _ = cli("init", "--help")
    assert code == 0 and "Examples:" in out and "--force" in out


def test_force_on_an_existing_repository_registers_its_own_model(in_tmp: Path, cli) -> None:
    """init --force finds the repository's nn.Module and training script (never importing
    them) and registers them instead of the template model and its tests."""
    root = in_tmp / "mnist-example"
    root.mkdir()
    shutil.copy(Path(__file__).parent / "own_loop" / "mnist_adopted.py", root / "train.py")
    (root / "pyproject.toml").write_text('[project]\nname = "mnist-example"\n')
    code, out, err = cli("init", "mnist-example", "--force", "--no-git", "-f", "json")
    assert code == 0, err
    result = json.loads(out)
    assert result["adopted"] == {
        "model": "mnist-example",
        "reference": "train:Net",
        "script": "train.py",
        "candidates": ["train:Net"],
    }
    assert not {"src/mnist_example/model.py", "configs/smoke.toml"} & set(result["created"])
    table = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["modelkit"]
    assert table["models"] == {"mnist-example": "train:Net"}
    assert table["defaults"]["model"] == "mnist-example"
    assert "python train.py" in (root / "Makefile").read_text()
    # the generated test checks the registration, and passes
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_force_with_two_models_asks_which(in_tmp: Path, cli) -> None:
    root = in_tmp / "two"
    root.mkdir()
    (root / "nets.py").write_text(
        "import torch.nn as nn\nclass A(nn.Module):\n    pass\nclass B(A):\n    pass\n"
    )
    code, _, err = cli("init", "two", "--force", "--no-git")
    assert code == 2 and "nets:A, nets:B" in err and "--model nets:A" in err
    assert sorted(p.name for p in root.iterdir()) == ["nets.py"]  # nothing written
    code, out, err = cli("init", "two", "--force", "--no-git", "--model", "nets:B", "-f", "json")
    assert code == 0, err
    assert json.loads(out)["adopted"]["reference"] == "nets:B"
    code, _, err = cli("init", "two", "--force", "--no-git", "--model", "nets")
    assert code == 2 and "module:attr" in err
