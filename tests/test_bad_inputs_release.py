"""Release trust boundaries (issue 22.1 and the version grammar of 22.3), table-driven.

* a release holds only regular files inside the run: every way of slipping a link (to a file
  holding a token, to a folder, to a copy inside the run) is refused naming the file, exit 2,
  and nothing reaches the registry;
* every path read from a manifest is checked before anything is written: a hand-edited
  manifest naming an absolute path or ``..`` fails ``verify`` (exit 3) and creates nothing;
* one version grammar: whitespace, control characters, other digits are refused (exit 2).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from release_helpers import copy_run, git_project

from modelkit.errors import UnsafeManifestPath, UnsafeRunFile
from modelkit.release import release
from modelkit.release.paths import check_relpath, inside, run_member
from modelkit.release.version import is_version_tag, parse_version

SECRET = "hf_SECRETtokenTHATmustNEVERleaveTHEmachine0"


@pytest.fixture()
def proj(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    project = git_project(tmp_path / "proj")
    monkeypatch.chdir(project.root)
    run = copy_run(trained_run, project.root, project=project)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "token.txt").write_text(SECRET)
    (outside / "x.json").write_text(json.dumps({"token": SECRET}))
    return project, run, outside


def _link_file(run: Path, outside: Path, rel: str, target: str) -> None:
    p = run / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists():
        p.unlink()
    os.symlink(outside / target, p)


def _link_to_own_copy(run: Path, outside: Path, rel: str, target: str) -> None:
    """Even a link to an identical copy is refused: the rule is 'regular files', not content."""
    copy = outside / f"copy-of-{rel.replace('/', '_')}"
    shutil.copyfile(run / rel, copy)
    (run / rel).unlink()
    os.symlink(copy, run / rel)


def _link_dir(run: Path, outside: Path, rel: str, target: str) -> None:
    shutil.rmtree(run / rel, ignore_errors=True)
    os.symlink(outside, run / rel, target_is_directory=True)


def _directory(run: Path, outside: Path, rel: str, target: str) -> None:
    (run / rel).unlink(missing_ok=True)
    (run / rel).mkdir()


CASES = [  # (how, the run's file, its target outside, the file named in the error)
    (_link_file, "training_curves.png", "token.txt", "training_curves.png"),
    (_link_file, "evals/x.json", "x.json", "evals/x.json"),
    (_link_dir, "evals", "", "evals/x.json"),
    (_link_to_own_copy, "config.json", "", "config.json"),
    (_link_to_own_copy, "model.safetensors", "", "model.safetensors"),
    (_link_to_own_copy, "README.md", "", "README.md"),
    (_directory, "training_curves.png", "", "training_curves.png"),
]


@pytest.mark.parametrize(
    ("how", "rel", "target", "named"), CASES, ids=[f"{c[0].__name__[1:]}-{c[1]}" for c in CASES]
)
def test_a_release_holds_only_regular_files_inside_the_run(proj, how, rel, target, named) -> None:
    project, run, outside = proj
    how(run, outside, rel, target)
    with pytest.raises(UnsafeRunFile) as err:
        release("v1.0", run_dir=run, target="registry", repo_id="org/x", project=project)
    assert named in err.value.message and err.value.exit_code == 2
    registry = project.root / "registry"
    published = [p for p in registry.rglob("*") if p.is_file()] if registry.exists() else []
    assert not [p for p in published if "refs" in p.parts or "blobs" in p.parts]
    assert all(SECRET not in p.read_text(errors="replace") for p in published)


def test_the_cli_says_one_line_and_exits_2(cli, proj) -> None:
    project, run, outside = proj
    _link_file(run, outside, "training_curves.png", "token.txt")
    code, out, err = cli("release", "v1.0", "--run", run, "--to", "registry", "--repo", "org/x")
    assert code == 2
    assert err.startswith("error: ") and "symbolic link" in err and "\nhint: " in err
    assert "Traceback" not in err and SECRET not in out + err


def _release_then_edit_manifest(project, run: Path, names: list[str]) -> Path:
    """Release v1.0, then hand-edit the registry's manifest to list ``names`` too."""
    release("v1.0", run_dir=run, target="registry", repo_id="org/x", project=project)
    repo = project.root / "registry" / "models--org--x"
    snap = repo / "snapshots" / (repo / "refs" / "v1.0").read_text().strip()
    manifest = json.loads((snap / "manifest.json").read_text())
    for name in names:
        manifest["files"][name] = {"sha256": "0" * 64, "size": 1}
    (snap / "manifest.json").unlink()  # a link into blobs/: replace the entry itself
    (snap / "manifest.json").write_text(json.dumps(manifest))
    return snap


@pytest.mark.parametrize(
    "evil",
    ["{abs}/created-by-verify.txt", "../../../../escaped.txt", "a/../../b.txt", "x\\..\\y",
     "ok/\x00nul", "./model.safetensors", "a//b"],
)  # fmt: skip
def test_verify_writes_nothing_for_a_hand_edited_manifest(cli, proj, tmp_path, evil) -> None:
    project, run, outside = proj
    name = evil.format(abs=outside)
    _release_then_edit_manifest(project, run, [name])
    before = sorted(p for p in tmp_path.rglob("*") if "registry" not in p.parts)
    code, _, err = cli("verify", "registry@v1.0", "--repo", "org/x")
    assert code == 3, err
    assert err.startswith("error: ") and "the path" in err and "Traceback" not in err
    assert not (outside / "created-by-verify.txt").exists()
    assert sorted(p for p in tmp_path.rglob("*") if "registry" not in p.parts) == before


VERSIONS_BAD = ["v2.0\n", " v2.0", "v2.0 ", "v2.0\t", "v2.0\x00", "V2.0", "v2", "2.0", "v01.0",
                "v1.0-rc1", "v\u0661.\u0662", "v1.2.3.4", "v1.0rc", "v1.0/../x", "", "v" + "1" * 70 + ".0"]  # fmt: skip
VERSIONS_OK = ["v0.1", "v2.0", "v1.2.3", "v1.2.0rc1", "v2.0.0a3", "v1.2.3b1", "v1.2.0.post1"]


@pytest.mark.parametrize("version", VERSIONS_BAD, ids=repr)
def test_one_version_grammar_refuses(cli, in_tmp: Path, version: str) -> None:
    assert not is_version_tag(version)
    code, _, err = cli("release", version, "--run", "runs/x", "--to", "registry", "--repo", "o/x")
    assert code == 2 and err.startswith("error: invalid version") and err.count("\n") == 2
    assert not (in_tmp / "registry").exists()


@pytest.mark.parametrize("version", VERSIONS_OK)
def test_one_version_grammar_accepts(version: str) -> None:
    assert str(parse_version(version)) == version[1:]


def test_the_registry_refuses_a_bad_version_even_when_called_directly(proj) -> None:
    from modelkit.errors import BadInputError
    from modelkit.release.local import LocalRegistry

    project, _, _ = proj
    reg = LocalRegistry(project.root / "registry", "org/x")
    with pytest.raises(BadInputError):
        reg.tag("../../outside", "0" * 40)
    assert not (project.root / "outside").exists()


# ---- properties of the manifest path check ----------------------------------------------------
SEGMENT = st.text(st.sampled_from("abcXYZ019_-.é"), min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_an_accepted_path_always_lands_inside_the_root(tmp_path_factory, name: str) -> None:
    root = tmp_path_factory.getbasetemp() / "prop-root"
    root.mkdir(exist_ok=True)
    try:
        path = inside(root, name, source="manifest.json")
    except UnsafeManifestPath as exc:
        assert exc.exit_code == 3 and "\n" not in exc.message
        return
    assert path.resolve().is_relative_to(root.resolve())
    assert path != root.resolve() and ".." not in Path(name).parts
    assert list(root.iterdir()) == []  # checking creates nothing


@settings(max_examples=100, deadline=None)
@given(st.lists(SEGMENT, min_size=1, max_size=5))
def test_plain_relative_paths_are_accepted_unchanged(parts: list[str]) -> None:
    name = "/".join(parts)
    assert check_relpath(name, source="manifest.json") == name


@settings(max_examples=100, deadline=None)
@given(st.lists(SEGMENT, max_size=3), st.sampled_from(["..", ".", "", "/x", "a\\b", "c:", "\n"]))
def test_any_bad_component_is_refused(parts: list[str], bad: str) -> None:
    with pytest.raises(UnsafeManifestPath):
        check_relpath("/".join([*parts, bad, "f"]), source="manifest.json")


def test_run_member_accepts_regular_files_and_names_links(tmp_path: Path) -> None:
    (tmp_path / "run" / "evals").mkdir(parents=True)
    (tmp_path / "run" / "evals" / "a.json").write_text("{}")
    assert run_member(tmp_path / "run", "evals/a.json").read_text() == "{}"
    os.symlink(tmp_path / "run" / "evals" / "a.json", tmp_path / "run" / "b.json")
    with pytest.raises(UnsafeRunFile, match="b.json is .*symbolic link"):
        run_member(tmp_path / "run", "b.json")
