"""Reference models: registry, shapes, and Hugging Face round-trips (parametrised over the registry)."""

from __future__ import annotations

import pytest
import torch

from modelkit.errors import UnknownNameError
from modelkit.models import build_model, list_models, resolve_model
from modelkit.models.registry import builtin_models

BUILTIN = sorted(builtin_models())
# what a model of each task takes from its data (the factory's parameters the data fills)
HINTS = {
    "classification": {"num_classes", "in_channels", "image_size"},
    "language-modeling": {"vocab_size", "context_length"},
}


def _sample(name: str, n: int) -> torch.Tensor:
    """``n`` inputs of the model's shape: images in [0, 1), or token ids for a language model."""
    entry = resolve_model(name)
    if entry.task == "language-modeling":
        return torch.randint(0, 256, (n, *entry.input_shape))
    return torch.rand(n, *entry.input_shape)


def _out_kwargs(name: str) -> dict[str, int]:
    """A non-default output size: 5 classes, or a 5-token vocabulary."""
    return (
        {"vocab_size": 5} if resolve_model(name).task == "language-modeling" else {"num_classes": 5}
    )


def test_registry_has_the_reference_models() -> None:
    assert {"mnist-mlp", "small-cnn"} <= set(list_models())


@pytest.mark.parametrize("name", BUILTIN)
def test_forward_shape(name: str) -> None:
    model, _ = build_model(name)
    x = _sample(name, 4)
    out = model(x)
    if resolve_model(name).task == "language-modeling":  # logits for every position
        assert out.shape == (4, x.shape[1], model.state_dict()["head.weight"].shape[0])
    else:
        assert out.shape == (4, model.state_dict()[list(model.state_dict())[-1]].shape[0])


def test_mlp_architecture_matches_the_article() -> None:
    model, _ = build_model("mnist-mlp")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 64), (64, 10)]
    assert sum(p.numel() for p in model.parameters()) == 109386


def test_cnn_architecture_matches_the_article() -> None:
    model, _ = build_model("small-cnn")
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size) == (
        3,
        32,
        (5, 5),
    )
    assert (model.conv2.out_channels, model.fc1.in_features, model.fc1.out_features) == (
        64,
        1024,
        1024,
    )
    assert model.fc2.out_features == 2 and model.dropout.p == 0.2
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 2)


def test_configurable_sizes() -> None:
    model, kw = build_model(
        "mnist-mlp", kwargs={"hidden_sizes": [32]}, data_hints={"num_classes": 3}
    )
    assert kw == {"hidden_sizes": [32], "num_classes": 3, "in_channels": 1, "image_size": 28}
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 3)


@pytest.mark.parametrize("name", BUILTIN)
def test_save_pretrained_round_trip(name: str, tmp_path) -> None:
    cls = type(build_model(name)[0])
    model = cls(**_out_kwargs(name)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    again = cls.from_pretrained(tmp_path).eval()
    x = _sample(name, 3).clamp(max=4)
    assert torch.equal(model(x), again(x))


def test_unknown_model_suggests_close_match() -> None:
    with pytest.raises(UnknownNameError) as e:
        resolve_model("mnist-mlpp")
    assert "did you mean 'mnist-mlp'" in str(e.value) and "small-cnn" in str(e.value)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_parameters_come_from_the_registered_entry(name: str) -> None:
    from modelkit.models.registry import factory_parameters

    params = factory_parameters(resolve_model(name))
    assert params is not None and HINTS[resolve_model(name).task] <= params
    _, kwargs = build_model(name)
    assert set(kwargs) == params  # every default is explicit in the resolved kwargs


def test_a_new_builtin_model_needs_no_second_table() -> None:
    """A model registered like the built-ins (a factory forwarding **kwargs, annotated with
    its class) gets its parameters and defaults from the entry alone."""
    from modelkit.models import registry

    class Tiny(torch.nn.Module):
        def __init__(self, num_classes: int = 3, width: int = 4) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(width, num_classes)

    def tiny(**kwargs) -> Tiny:
        return Tiny(**kwargs)

    tiny.__annotations__["return"] = Tiny  # as `-> Tiny` resolves in a module
    registry.register_model("test-tiny", input_shape=(4,))(tiny)
    try:
        assert registry.factory_parameters(registry.resolve_model("test-tiny")) == {
            "num_classes",
            "width",
        }
        model, kwargs = build_model("test-tiny", data_hints={"num_classes": 5})
        assert kwargs == {"num_classes": 5, "width": 4}
        assert model.fc.out_features == 5
    finally:
        del registry._REGISTRY["test-tiny"]
