"""An own loop's input preprocessing is recorded and applied by eval (issue 19: a Lightning
classifier scored 0.787 under eval and 0.9125 with its own normalisation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import modelkit
from modelkit.data.digits import load_digits_dataset
from modelkit.errors import BadInputError
from modelkit.training.evaluate import evaluate_run


def _trained(seed: int = 0):
    from task_models import NormalisingNet

    torch.manual_seed(seed)
    ds = load_digits_dataset()
    model = NormalisingNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(40):
        loss = F.cross_entropy(model(model.normalize(ds.x_train)), ds.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, ds, float(loss.detach())


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


@pytest.mark.parametrize("transform", ["model.normalize", "task_models:normalize"])
def test_eval_applies_the_recorded_transform(tmp_path: Path, transform: str) -> None:
    model, ds, loss = _trained()
    with modelkit.start_run(
        tmp_path / "run", model=model, task="classification", eval_transform=transform
    ) as run:
        run.log(0, loss=loss)
        record = run.finish(model)
    assert record["eval_transform"] == transform and record["task"] == "classification"
    result = evaluate_run(tmp_path / "run", data="digits", device="cpu")
    own = _accuracy(model, model.normalize(ds.x_test), ds.y_test)
    plain = _accuracy(model, ds.x_test, ds.y_test)
    assert result["accuracy"] == own  # what the script's own evaluation gives
    assert own > plain + 0.02  # the raw inputs score lower (0.953 vs 0.912 here)


def test_start_run_refuses_a_transform_it_cannot_import_again(tmp_path: Path) -> None:
    model, _, _ = _trained()
    with pytest.raises(BadInputError, match="cannot be imported again"):
        modelkit.start_run(tmp_path / "r", model=model, eval_transform=lambda x: x)
    with pytest.raises(BadInputError, match="model.ATTR"):
        modelkit.start_run(tmp_path / "r", model=model, eval_transform="normalize")
