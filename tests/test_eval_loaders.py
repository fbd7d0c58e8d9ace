"""`modelkit eval RUN --data pkg.mod:loader` on a classification run: a loader may return any
torch Dataset/DataLoader; the run's class names label the result (issue 19/20)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

LOADER = """
import torch
from torch.utils.data import DataLoader, TensorDataset
from modelkit.data.digits import load_digits_dataset


def held_out():
    ds = load_digits_dataset()
    return TensorDataset(ds.x_test, ds.y_test)


def as_loader():
    ds = load_digits_dataset()
    return DataLoader(TensorDataset(ds.x_test, ds.y_test), batch_size=64)


def too_many_labels():
    ds = load_digits_dataset()
    return TensorDataset(ds.x_test, ds.y_test + 100)
"""


def _eval(cli, run: Path, data: str) -> tuple[int, dict, str]:
    code, out, err = cli("eval", str(run), "--data", data, "--format", "json")
    return code, (json.loads(out) if code == 0 else {}), err


def test_a_loaders_dataset_scores_as_the_builtin_data(cli, in_tmp: Path, trained_run: Path) -> None:
    (in_tmp / "myloaders.py").write_text(textwrap.dedent(LOADER))
    code, builtin, err = _eval(cli, trained_run, "digits")
    assert code == 0, err
    for spec in ("myloaders:held_out", "myloaders:as_loader"):
        code, ev, err = _eval(cli, trained_run, spec)
        assert code == 0, err
        assert ev["accuracy"] == builtin["accuracy"]
        assert ev["data"]["spec"] == spec and not ev["data"]["same_as_training"]
        assert ev["per_class_accuracy"] == builtin["per_class_accuracy"]


def test_labels_the_model_cannot_output_are_refused(cli, in_tmp: Path, trained_run: Path) -> None:
    (in_tmp / "myloaders.py").write_text(textwrap.dedent(LOADER))
    code, _, err = _eval(cli, trained_run, "myloaders:too_many_labels")
    assert code == 2, err
    assert "does not fit the model" in err and "outputs 10 classes" in err
    assert "unexpected" not in err and "Traceback" not in err
