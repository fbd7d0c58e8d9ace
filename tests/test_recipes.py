"""The recipe builders on real torch objects: optimizers, schedules, losses, augmentation,
normalisation, config fields, data loaders with arguments."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from modelkit.errors import BadInputError, ConfigError

# the schedule tests step schedulers without training steps in between
pytestmark = pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return list(torch.nn.Linear(4, 3).parameters())


# ---- optimizers ---------------------------------------------------------------------------
def test_any_torch_optimizer_by_name_any_case_with_kwargs() -> None:
    from modelkit.training.optim import build_optimizer, optimizer_spec

    opt = build_optimizer({"name": "adadelta", "lr": 1.0, "rho": 0.8}, _params())
    assert type(opt) is torch.optim.Adadelta
    assert opt.defaults["lr"] == 1.0 and opt.defaults["rho"] == 0.8
    spec = optimizer_spec({"name": "RMSPROP", "alpha": 0.9}, lr=0.01, weight_decay=0.1)
    assert spec == {"name": "RMSprop", "lr": 0.01, "weight_decay": 0.1, "alpha": 0.9}
    assert "momentum" not in spec  # the top-level momentum is SGD's only
    rms = build_optimizer(spec, _params())
    assert rms.defaults["alpha"] == 0.9 and rms.defaults["momentum"] == 0


def test_short_form_is_normalised_and_keeps_fused_kernels() -> None:
    from modelkit.training.optim import build_optimizer, optimizer_spec

    spec = optimizer_spec("sgd", lr=0.1, weight_decay=1e-4, momentum=0.8)
    assert spec == {"name": "SGD", "lr": 0.1, "weight_decay": 1e-4, "momentum": 0.8, "fused": True}
    opt = build_optimizer(spec, _params())
    assert opt.defaults["fused"] is True and opt.defaults["momentum"] == 0.8
    for name in ("adam", "AdamW"):
        assert optimizer_spec(name, lr=1e-3)["fused"] is True
    # the table wins over the top-level keys; an explicit foreach turns fused off
    assert optimizer_spec({"name": "adam", "lr": 5.0}, lr=1e-3)["lr"] == 5.0
    assert "fused" not in optimizer_spec({"name": "adam", "foreach": True}, lr=1e-3)
    assert optimizer_spec("adadelta", lr=1.0) == {
        "name": "Adadelta",
        "lr": 1.0,
        "weight_decay": 0.0,
    }


def test_unknown_optimizer_names_and_arguments_are_refused() -> None:
    from modelkit.training.optim import build_optimizer, optimizer_spec

    with pytest.raises(ConfigError, match=r"unknown optimizer 'adadelt'; did you mean 'Adadelta'"):
        optimizer_spec("adadelt", lr=1.0)
    with pytest.raises(ConfigError) as info:
        build_optimizer({"name": "Adam", "lr": 1e-3, "gama": 0.7, "betaz": [0.9, 0.9]}, _params())
    assert "takes no arguments 'betaz', 'gama'" in info.value.message
    assert info.value.exit_code == 2 and "betas" in info.value.hint
    with pytest.raises(ConfigError, match="LBFGS needs a closure"):
        optimizer_spec("lbfgs", lr=1.0)
    with pytest.raises(ConfigError, match="Invalid learning rate"):
        build_optimizer({"name": "SGD", "lr": -1.0}, _params())
    with pytest.raises(ConfigError, match="a table with a 'name' key"):
        optimizer_spec({"lr": 1.0}, lr=1.0)


# ---- schedules ----------------------------------------------------------------------------
def _lrs(schedule, steps_per_epoch: int, epochs: int) -> list[float]:
    out = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            out.append(schedule.scheduler.optimizer.param_groups[0]["lr"])
            schedule.after_step()
        schedule.after_epoch(test_loss=1.0)
    return out


def test_scheduler_by_name_stepped_per_epoch_or_per_step() -> None:
    from modelkit.training.optim import build_scheduler

    opt = torch.optim.SGD(_params(), lr=1.0)
    per_epoch = build_scheduler(
        {"name": "steplr", "step_size": 1, "gamma": 0.5, "interval": "epoch"},
        opt,
        steps_per_epoch=2,
        epochs=3,
    )
    assert per_epoch.interval == "epoch"
    assert _lrs(per_epoch, 2, 3) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    opt = torch.optim.SGD(_params(), lr=1.0)
    per_step = build_scheduler(
        {"name": "ExponentialLR", "gamma": 0.5}, opt, steps_per_epoch=2, epochs=2
    )
    assert _lrs(per_step, 2, 2) == [1.0, 0.5, 0.25, 0.125]


def test_legacy_schedules_and_filled_run_lengths() -> None:
    from modelkit.training.optim import build_scheduler, schedule_spec

    assert schedule_spec("none") is None
    assert schedule_spec("cosine") == {"name": "CosineAnnealingLR", "interval": "step"}
    opt = torch.optim.SGD(_params(), lr=1.0)
    step = build_scheduler("step", opt, steps_per_epoch=2, epochs=3)
    assert _lrs(step, 2, 3) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]  # halved each epoch, as before
    cosine = build_scheduler(
        "cosine", torch.optim.SGD(_params(), lr=1.0), steps_per_epoch=5, epochs=2
    )
    assert cosine.scheduler.T_max == 10
    capped = build_scheduler(
        "OneCycleLR", torch.optim.Adam(_params(), lr=0.01), steps_per_epoch=5, epochs=4, max_steps=7
    )
    assert capped.scheduler.total_steps == 7  # max_steps is the run's length
    assert capped.scheduler.optimizer.param_groups[0]["max_lr"] == 0.01
    lrs = _lrs(capped, 7, 1)
    assert max(lrs) <= 0.01 and lrs[0] < lrs[2]  # warms up towards max_lr


def test_reduce_on_plateau_steps_with_the_held_out_loss() -> None:
    from modelkit.training.optim import build_scheduler

    opt = torch.optim.SGD(_params(), lr=1.0)
    plateau = build_scheduler(
        {"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.1},
        opt,
        steps_per_epoch=1,
        epochs=3,
    )
    assert plateau.interval == "epoch" and plateau.plateau
    plateau.after_epoch(test_loss=1.0)
    plateau.after_epoch(test_loss=2.0)  # worse: cut
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_bad_schedules_are_refused() -> None:
    from modelkit.training.optim import build_scheduler, schedule_spec

    with pytest.raises(ConfigError, match="did you mean 'StepLR'"):
        schedule_spec("steplrr")
    with pytest.raises(ConfigError, match="interval 'epochs'; did you mean 'epoch'"):
        schedule_spec({"name": "StepLR", "step_size": 1, "interval": "epochs"})
    with pytest.raises(ConfigError, match="takes no argument 'lr_gamma'"):
        schedule_spec({"name": "StepLR", "lr_gamma": 0.7})
    with pytest.raises(ConfigError, match="needs a Python callable"):
        schedule_spec("LambdaLR")
    with pytest.raises(ConfigError, match="once per epoch"):
        schedule_spec({"name": "ReduceLROnPlateau", "interval": "step"})
    with pytest.raises(ConfigError, match="MultiStepLR"):
        build_scheduler(
            {"name": "MultiStepLR"}, torch.optim.SGD(_params(), lr=1.0), steps_per_epoch=1, epochs=1
        )


def test_gradient_clipping_bounds_the_global_norm() -> None:
    from modelkit.training.optim import clip_gradients

    params = _params()
    for p in params:
        p.grad = torch.full_like(p, 10.0)
    clip_gradients(params, 1.0)
    assert torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])) == pytest.approx(
        1.0, rel=1e-5
    )


# ---- losses -------------------------------------------------------------------------------
def test_losses_by_name() -> None:
    import torch.nn.functional as F

    from modelkit.training.losses import build_loss

    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.equal(build_loss("cross_entropy")(logits, y), F.cross_entropy(logits, y))
    smooth = build_loss({"name": "cross_entropy", "label_smoothing": 0.1})
    assert torch.equal(smooth(logits, y), F.cross_entropy(logits, y, label_smoothing=0.1))
    log_probs = logits.log_softmax(1)
    nll = build_loss("NLL")
    assert torch.equal(nll(log_probs, y), F.nll_loss(log_probs, y))
    assert torch.allclose(nll(log_probs, y, reduction="sum"), F.nll_loss(log_probs, y) * 8)


def test_user_loss_callable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelkit.training.losses import build_loss

    (tmp_path / "my_losses.py").write_text(
        textwrap.dedent(
            """
            import torch.nn.functional as F

            def weighted(output, target, weight=1.0):
                return F.cross_entropy(output, target) * weight

            def per_sample(output, target):
                return F.cross_entropy(output, target, reduction="none")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    logits, y = torch.randn(4, 3), torch.randint(0, 3, (4,))
    fn = build_loss({"name": "my_losses:weighted", "weight": 2.0})
    assert torch.allclose(fn(logits, y), 2 * torch.nn.functional.cross_entropy(logits, y))
    assert torch.allclose(
        fn(logits, y, reduction="sum"), 8 * torch.nn.functional.cross_entropy(logits, y)
    )
    with pytest.raises(BadInputError, match=r"returned \[4\], not a scalar"):
        build_loss("my_losses:per_sample")(logits, y)
    with pytest.raises(BadInputError, match="has no attribute 'nope'"):
        build_loss("my_losses:nope")


def test_bad_losses_are_refused() -> None:
    from modelkit.training.losses import build_loss

    with pytest.raises(
        ConfigError, match="unknown loss 'cross_entropi'; did you mean 'cross_entropy'"
    ):
        build_loss("cross_entropi")
    with pytest.raises(ConfigError, match="takes no argument 'smoothing'"):
        build_loss({"name": "cross_entropy", "smoothing": 0.1})
    with pytest.raises(ConfigError, match=r"label_smoothing must be a number in \[0, 1\)"):
        build_loss({"name": "cross_entropy", "label_smoothing": 1.5})


# ---- augmentation and normalisation -------------------------------------------------------
def test_augmentation_is_per_sample_seeded_and_leaves_global_rng_alone() -> None:
    from modelkit.data.augment import build_augment

    aug = build_augment({"random_crop": 2, "horizontal_flip": True})
    x = torch.arange(16 * 3 * 6 * 6, dtype=torch.float32).view(16, 3, 6, 6)
    state = torch.get_rng_state()
    a = aug(x, seed=0, epoch=1, batch=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, aug(x, seed=0, epoch=1, batch=2))  # same (seed, epoch, batch): same
    assert not torch.equal(a, aug(x, seed=0, epoch=1, batch=3))
    assert not torch.equal(a, aug(x, seed=1, epoch=1, batch=2))
    assert a.shape == x.shape
    # each sample is a shifted (and maybe mirrored) window of itself: the 2x2 centre survives
    for i in range(16):
        src = x[i, :, 2:4, 2:4]
        found = any(
            torch.equal(a[i, :, r : r + 2, c : c + 2], s)
            for s in (src, src.flip(-1))
            for r in range(5)
            for c in range(5)
        )
        assert found, i
    changed = {bool(torch.equal(a[i], x[i])) for i in range(16)}
    assert False in changed  # not one crop for the whole batch


def test_augmentation_shares_draws_across_ranks() -> None:
    from modelkit.data.augment import build_augment

    aug = build_augment({"random_crop": 1, "vertical_flip": 0.5})
    x = torch.rand(8, 1, 5, 5)
    whole = aug(x, seed=3, epoch=0, batch=0)
    rows = torch.arange(1, 8, 2)  # rank 1 of 2
    part = aug(x[rows], seed=3, epoch=0, batch=0, positions=rows, total=8)
    assert torch.equal(part, whole[rows])


def test_bad_augment_and_normalize_tables() -> None:
    from modelkit.data.augment import build_augment, normalize_spec

    assert build_augment({}) is None
    assert build_augment({"random_crop": 0, "horizontal_flip": False}) is None
    with pytest.raises(ConfigError, match="unknown key 'flip'"):
        build_augment({"flip": True})
    with pytest.raises(ConfigError, match="integer >= 0"):
        build_augment({"random_crop": 1.5})
    with pytest.raises(ConfigError, match="did you mean 'reflect'"):
        build_augment({"random_crop": 2, "padding_mode": "reflekt"})
    assert normalize_spec({"mean": 0.5, "std": [0.25]}) == {"mean": [0.5], "std": [0.25]}
    with pytest.raises(ConfigError, match="exactly 'mean' and 'std'"):
        normalize_spec({"mean": [0.5]})
    with pytest.raises(ConfigError, match="3 channel"):
        normalize_spec({"mean": [0.5, 0.5], "std": [1.0]}, channels=3)


def test_normalisation_is_per_channel() -> None:
    from modelkit.data import load_dataset

    ds = load_dataset("digits", normalize={"mean": [0.1307], "std": [0.3081]})
    raw = load_dataset("digits")
    assert torch.allclose(ds.x_train, (raw.x_train - 0.1307) / 0.3081)
    assert ds.info["normalize"] == {"mean": [0.1307], "std": [0.3081]}
    assert ds.fingerprint == raw.fingerprint  # the data's identity is its raw content


# ---- config -------------------------------------------------------------------------------
def test_recipe_fields_in_the_config_and_their_errors(tmp_path: Path) -> None:
    from modelkit.config import TrainConfig, recipe, resolve_config

    cfg = tmp_path / "r.toml"
    cfg.write_text(
        textwrap.dedent(
            """
            optimizer = {name = "Adadelta", lr = 1.0}
            lr_schedule = {name = "StepLR", step_size = 1, gamma = 0.7, interval = "epoch"}
            loss = "nll"
            grad_clip = 1.0
            max_steps = 5
            keep_best = "test_accuracy"
            normalize = {mean = [0.1307], std = [0.3081]}
            """
        )
    )
    config = resolve_config(config_file=cfg, overrides={"lr": 0.5})
    assert config.optimizer == {"name": "Adadelta", "lr": 0.5}  # --lr wins over the table
    assert recipe(config)["lr_schedule"]["interval"] == "epoch"
    assert TrainConfig.from_dict(config.to_dict()) == config  # round-trips through config.json
    cfg.write_text('optimizer = {name = "Adadelta", lr = 1.0, lr_gamma = 0.7}\n')
    with pytest.raises(ConfigError, match="takes no argument 'lr_gamma'"):
        resolve_config(config_file=cfg)
    with pytest.raises(ConfigError, match="did you mean 'test_accuracy'"):
        TrainConfig(keep_best="test_acuracy")
    with pytest.raises(ConfigError, match="max-steps must be >= 0"):
        TrainConfig(max_steps=-1)


# ---- data loaders with arguments ----------------------------------------------------------
LOADER = """
import torch
from modelkit.data.base import Dataset, fingerprint_tensors

def load(n: int = 40, scale: float = 1.0) -> Dataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 4, 4, generator=g) * scale + y.view(-1, 1, 1, 1)
    return Dataset(spec=f"toy:{n}", x_train=x[: n // 2], y_train=y[: n // 2], x_test=x[n // 2 :],
                   y_test=y[n // 2 :], classes=["a", "b"], fingerprint=fingerprint_tensors(x, y))
"""


def test_data_loader_references_and_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelkit.data import load_dataset
    from modelkit.project import load_project

    (tmp_path / "my_data.py").write_text(LOADER)
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.modelkit.datasets]
            plain = "my_data:load"
            [tool.modelkit.datasets.big]
            loader = "my_data:load"
            n = 60
            [tool.modelkit.datasets.bad]
            loader = "my_data:load"
            size = 3
            [tool.modelkit.datasets.digits8]
            loader = "digits"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    project = load_project(tmp_path)
    ds = load_dataset("my_data:load", project=project)  # no dotted-module special case
    assert len(ds.x_train) == 20
    assert len(load_dataset("plain", project=project).x_train) == 20
    big = load_dataset("big", project=project)
    assert len(big.x_train) == 30 and big.info["loader"] == {
        "ref": "my_data:load",
        "kwargs": {"n": 60},
    }
    assert load_dataset("digits8", project=project).num_classes == 10
    with pytest.raises(BadInputError, match="cannot take"):
        load_dataset("bad", project=project)
    with pytest.raises(BadInputError, match="did you mean 'mnist'"):
        load_dataset("minst:/tmp", project=project)
    with pytest.raises(BadInputError, match="fixed image size"):
        load_dataset("digits", image_size=32)
