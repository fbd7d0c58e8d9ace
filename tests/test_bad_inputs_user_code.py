"""User code and recipe values at the boundary (issue 22, item 6), table-driven, through the real
CLI: a user callable that raises is named (exit 1), a recipe value torch accepts at construction
but fails on later is refused before the first step (exit 2), config readers refuse bombs,
duplicate keys and deep nesting. Every case: exactly one ``error:`` and one ``hint:`` line, no
traceback, no "unexpected", and no run directory written."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TRAIN = ("train", "--epochs", "1", "--quiet", "--out", "run")

LOADERS = """
import torch
from modelkit.data.base import Dataset


def boom():
    raise ValueError("disk on fire")


def make(n: int = 6, classes: int = 10, dtype=torch.int64, n_test: int = 6):
    x, xt = torch.zeros(n, 1, 28, 28), torch.zeros(n_test, 1, 28, 28)
    return Dataset(spec="u", x_train=x, y_train=torch.arange(n, dtype=dtype) % classes,
                   x_test=xt, y_test=torch.arange(n_test, dtype=dtype) % classes,
                   classes=[str(i) for i in range(classes)], fingerprint="x")


def empty():
    return make(n_test=0)


def int32():
    return make(dtype=torch.int32)


def two_classes():
    return make(classes=2)


def sized(n=6):
    return make(n=n)
"""
USER = {
    "mk_uc/__init__.py": "",
    "mk_uc/loaders.py": LOADERS,
    "mk_uc/losses.py": "def boom(output, target):\n    raise RuntimeError('loss exploded')\n",
    "mk_uc/models.py": "def broken(**kwargs):\n    raise KeyError('weights.bin')\n",
}
BOMB = "\n".join(
    [
        "model_kwargs:",
        '  a: &a ["x","x","x","x","x","x","x","x","x"]',
        *(
            f"  {n}: &{n} [{', '.join([f'*{p}'] * 9)}]"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    args: tuple[str, ...]
    code: int
    needle: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.group}-{self.name}"


def recipe(name: str, toml: str, needle: str, code: int = 2) -> Case:
    return Case("recipe", name, (*TRAIN, "-c", "c.toml"), code, needle, {**USER, "c.toml": toml})


def data(name: str, spec: str, needle: str, code: int = 2, pyproject: str = "") -> Case:
    files = {**USER, **({"pyproject.toml": pyproject} if pyproject else {})}
    return Case("user_data", name, (*TRAIN, "-d", spec), code, needle, files)


def reader(name: str, suffix: str, text: str, needle: str) -> Case:
    args = ("train", "--quiet", "--out", "run", "-c", f"c.{suffix}")
    return Case("readers", name, args, 2, needle, {f"c.{suffix}": text})


CASES = [
    # user callables: the callable named, exit 1
    data("loader-raises", "mk_uc.loaders:boom", "dataset loader mk_uc.loaders:boom raised", 1),
    recipe("loss-raises", 'loss = "mk_uc.losses:boom"\n', "loss mk_uc.losses:boom raised", 1),
    recipe("factory-raises", 'model = "mk_uc.models:broken"\n', "model factory", 1),
    # what a loader returns: checked before training
    data("loader-empty-split", "mk_uc.loaders:empty", "the test split is empty"),
    data("loader-int32-labels", "mk_uc.loaders:int32", "torch.int32, expected torch.int64"),
    data(
        "dataset-table-wrong-type",
        "sized",
        "n = 'ten' must be int",
        pyproject='[project]\nname = "p"\n[tool.modelkit.datasets.sized]\n'
        'loader = "mk_uc.loaders:sized"\nn = "ten"\n',
    ),
    # recipe tables: dry-built before the first step
    recipe(
        "steplr-gamma-string",
        'lr_schedule = {name = "StepLR", gamma = "x"}\n',
        "StepLR: gamma must be a number",
    ),
    recipe("steplr-step-size-0", 'lr_schedule = {name = "StepLR", step_size = 0}\n', "step 1"),
    recipe("cosine-t-max-0", 'lr_schedule = {name = "CosineAnnealingLR", T_max = 0}\n', "T_max=0"),
    recipe(
        "onecycle-too-short",
        'lr_schedule = {name = "OneCycleLR", total_steps = 2}\n',
        "has total_steps 2, but the run takes",
    ),
    recipe("loss-not-a-module-class", 'loss = "collections:OrderedDict"\n', "is a class"),
    recipe("crop-larger-than-image", "augment = {random_crop = 40}\n", "not smaller than"),
    recipe(
        "adam-three-betas",
        'optimizer = {name = "Adam", betas = [0.9, 0.99, 0.999]}\n',
        "betas takes 2 values, got 3",
    ),
    # config readers
    reader("yaml-alias-bomb", "yaml", BOMB, "aliases expand to more than"),
    reader(
        "yaml-many-aliases", "yaml", "a: &a 1\nb: [" + ", ".join(["*a"] * 200) + "]\n", "aliases"
    ),
    reader("yaml-self-reference", "yaml", "model_kwargs: &a\n  x: *a\n", "refers to itself"),
    reader("yaml-duplicate-key", "yaml", "epochs: 1\nepochs: 2\n", "'epochs' appears twice"),
    reader("json-duplicate-key", "json", '{"epochs": 1, "epochs": 2}', "'epochs' appears twice"),
    reader("json-deep", "json", "[" * 100_000 + "]" * 100_000, "nested deeper than 100"),
    reader("toml-deep", "toml", "x = " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    reader("yaml-deep", "yaml", "x: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    # init --force --model names what the repository does not define
    Case(
        "init",
        "force-model-not-defined",
        ("init", ".", "--force", "--no-git", "--model", "models:Nope"),
        2,
        "defines no 'Nope'",
        {"models/__init__.py": "import torch\n\nclass Net(torch.nn.Module):\n    pass\n"},
    ),
    Case(
        "init",
        "force-model-no-module",
        ("init", ".", "--force", "--no-git", "--model", "nomod:Net"),
        2,
        "no module 'nomod'",
        {"models/__init__.py": "import torch\n\nclass Net(torch.nn.Module):\n    pass\n"},
    ),
]


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _one_error(err: str) -> None:
    lines = err.splitlines()
    assert sum(x.startswith("error: ") for x in lines) == 1, err
    assert sum(x.startswith("hint: ") for x in lines) == 1, err
    assert "Traceback" not in err and "unexpected" not in err, err


@pytest.fixture()
def user_project(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(in_tmp))  # mk_uc importable, like a project root
    return in_tmp


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_user_code_and_recipe_values(case: Case, user_project: Path, cli) -> None:
    _write(user_project, case.files)
    code, _out, err = cli(*case.args)
    assert code == case.code, err
    _one_error(err)
    assert case.needle in err, err
    assert not (user_project / "run").exists()
    if case.group == "init":
        assert not (user_project / "pyproject.toml").exists()


def test_user_code_traceback_only_under_debug(
    user_project: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(user_project, USER)
    monkeypatch.setenv("MODELKIT_DEBUG", "1")
    code, _out, err = cli(*TRAIN, "-d", "mk_uc.loaders:boom")
    assert code == 1 and "disk on fire" in err and "Traceback" in err
    assert 'raise ValueError("disk on fire")' in err  # the user's own frame


def test_a_loss_module_class_is_instantiated(user_project: Path, cli) -> None:
    _write(
        user_project,
        {"c.toml": 'loss = {name = "torch.nn:CrossEntropyLoss", label_smoothing = 0.1}\n'},
    )
    code, _out, err = cli(*TRAIN, "-c", "c.toml")
    assert code == 0, err
    record = json.loads((user_project / "run" / "run.json").read_text())
    assert record["status"] == "complete"


def test_eval_on_data_with_other_classes(user_project: Path, cli, request) -> None:
    trained = request.getfixturevalue("trained_run")
    shutil.copytree(trained, user_project / "run10")
    _write(user_project, USER)
    code, _out, err = cli("eval", "run10", "-d", "mk_uc.loaders:two_classes")
    assert code == 2, err
    _one_error(err)
    assert "it has 2 classes, the run was trained on 10" in err


def test_metrics_with_a_non_object_line(user_project: Path, cli, request) -> None:
    trained = request.getfixturevalue("trained_run")
    shutil.copytree(trained, user_project / "run")
    with open(user_project / "run" / "metrics.jsonl", "a") as f:
        f.write("[1, 2]\n")
    code, _out, err = cli("card", "run")
    assert code == 2, err
    _one_error(err)
    assert "metrics.jsonl line" in err and "not a JSON object" in err


def test_deep_run_config_json(user_project: Path, cli, request) -> None:
    trained = request.getfixturevalue("trained_run")
    shutil.copytree(trained, user_project / "run")
    (user_project / "run" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _out, err = cli("eval", "run")
    assert code == 2, err
    _one_error(err)
    assert "nested deeper than 100" in err


def test_plain_signing_key_with_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("model_signing")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from modelkit.errors import BadInputError
    from modelkit.release.signing import PASSWORD_ENV, sign_manifest

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "key.pem").write_bytes(pem)
    monkeypatch.setenv(PASSWORD_ENV, "hunter2")
    with pytest.raises(BadInputError) as info:
        sign_manifest(b"{}", key=tmp_path / "key.pem")
    assert "is not encrypted, but a password is set" in info.value.message
    assert "encrypted" not in info.value.message.replace("not encrypted", "")
