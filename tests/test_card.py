"""`modelkit card`: metadata huggingface_hub parses, sections filled from facts, hand edits kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from release_helpers import copy_run, git_project

from modelkit.card import card_todos, validate_card


@pytest.fixture()
def project_run(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    git_project(tmp_path, prose=False)
    monkeypatch.chdir(tmp_path)
    run = copy_run(trained_run, tmp_path)
    (run / "README.md").unlink()
    return run


def test_card_validates_and_is_filled_from_facts(cli, project_run: Path) -> None:
    code, out, err = cli("card", project_run, "--repo", "org/digits-mlp", "--format", "json")
    assert code == 0, err
    text = (project_run / "README.md").read_text()
    assert validate_card(text) == []
    card = ModelCard(text, ignore_metadata_errors=False)  # stock parser, strict
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["pipeline_tag"] == "image-classification"
    assert data["library_name"] == "modelkit" and "mnist-mlp" in data["tags"]
    name, results = model_index_to_eval_results(data["model-index"])
    evaluation = json.loads((project_run / "eval.json").read_text())
    acc = next(r for r in results if r.metric_type == "accuracy")
    assert name == "digits-mlp" and acc.metric_value == round(evaluation["accuracy"], 6)
    record = json.loads((project_run / "run.json").read_text())
    # facts: parameter count from the header, fingerprint, sha256, per-class table, repro command
    assert f"{record['num_parameters']:,}" in text and "F32" in text
    assert record["data"]["fingerprint"] in text and record["weights_sha256"] in text
    assert f"| 0 | {evaluation['per_class_accuracy']['0']:.4f} |" in text
    assert "modelkit repro --against RUN_DIR" in text and str(project_run) not in text
    assert 'model = modelkit.load("hf://org/digits-mlp", "vX.Y")' in text
    assert 'MnistMLP.from_pretrained("org/digits-mlp", revision="vX.Y")' in text
    assert "None" not in text and "https://github.com/)" not in text
    assert "(training_curves.png)" in text
    png = (project_run / "training_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert set(json.loads(out)["todos"]) == {"uses", "ethics", "contact"}


def test_strict_fails_on_unfilled_sections(cli, project_run: Path) -> None:
    code, _, err = cli("card", project_run, "--strict")
    assert code == 3 and "unfilled" in err
    assert not (project_run / "README.md").exists()  # nothing half-written


def test_regenerating_keeps_hand_written_sections(cli, project_run: Path) -> None:
    assert cli("card", project_run)[0] == 0
    readme = project_run / "README.md"
    text = readme.read_text()
    for name in ("uses", "ethics", "contact"):
        text = text.replace(f"<!-- modelkit:todo {name} -->", "")
    text = text.replace("[More Information Needed]", "Written.")
    text = text.replace("## Uses\n", "## Uses\n\nFor teaching only. Hand-written.\n")
    text = text.replace("license: mit", "license: apache-2.0\nbase_model: none-hand-set")
    text += "\n## Acknowledgements\n\nThanks to the reviewers.\n"
    # a stale generated section is refreshed from the facts
    text = text.replace("- **Seed:**", "- **Seed (stale):**")
    readme.write_text(text)
    code, _, err = cli("card", project_run, "--strict")
    assert code == 0, err
    new = readme.read_text()
    assert "For teaching only. Hand-written." in new and "Thanks to the reviewers." in new
    assert "Seed (stale)" not in new and "- **Seed:**" in new
    meta = yaml.safe_load(new.split("---\n")[1])
    assert meta["base_model"] == "none-hand-set" and card_todos(new) == []


def test_card_metadata_errors_are_listed(cli, project_run: Path) -> None:
    pyproject = Path("pyproject.toml")
    pyproject.write_text(
        pyproject.read_text() + '[tool.modelkit.card]\nlicense = "not-a-license"\ntags = "oops"\n'
    )
    code, _, err = cli("card", project_run)
    assert code == 2
    assert "license: 'not-a-license' is not a Hub license id" in err
    assert not (project_run / "README.md").exists()


def test_card_bad_inputs(cli, in_tmp: Path, trained_run: Path) -> None:
    code, _, err = cli("card", in_tmp / "nope")
    assert code == 2 and "run directory not found" in err
    run = copy_run(trained_run, in_tmp)
    (run / "eval.json").unlink()
    code, _, err = cli("card", run)
    assert code == 2 and "no evaluation in" in err and "modelkit eval" in err
    code, _, err = cli("card", run, "--version", "1.2")
    assert code == 2


def test_a_repository_without_a_modelkit_table_is_still_the_project(tmp_path: Path) -> None:
    """An adopting repository has [project] but no [tool.modelkit]: its root (license, card
    prose, imports) is still found."""
    from modelkit.card.facts import project_license
    from modelkit.project import load_project

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nlicense = "MIT"\n')
    (tmp_path / "pkg").mkdir()
    project = load_project(tmp_path / "pkg")
    assert project.root == tmp_path.resolve()
    assert project_license(project) == "mit"
