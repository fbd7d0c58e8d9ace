"""The importable model reference (modelkit.models.reference): built-in, alias, instance."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from modelkit.errors import BadInputError, RunDirError
from modelkit.models.reference import ModelReference, reference_for_model, reference_for_name
from modelkit.runs.documents import read_model_reference


def test_builtin_name_round_trips_and_names_its_package() -> None:
    ref = reference_for_name("mnist-mlp", kwargs={"num_classes": 10})
    assert ref.ref == "modelkit.models.mlp:mnist_mlp"
    assert ref.package == "modelkit" and ref.version
    again = read_model_reference(ref.to_dict(), source="config.json")
    assert again == ref
    model = again.build()
    assert sum(p.numel() for p in model.parameters()) == 109_386


def test_instance_of_builtin_class_records_every_kwarg() -> None:
    from modelkit.models.mlp import MnistMLP

    ref = reference_for_model(MnistMLP(num_classes=5))
    assert ref.ref == "modelkit.models.mlp:MnistMLP"
    assert ref.kwargs["num_classes"] == 5 and ref.kwargs["hidden_sizes"] == [128, 64]
    assert ref.build().net[-1].out_features == 5


def test_script_main_class_maps_to_its_module_name(tmp_path) -> None:
    script = tmp_path / "train_net.py"
    script.write_text(
        textwrap.dedent(
            """
            import json
            from torch import nn
            from modelkit.models.reference import reference_for_model

            class Net(nn.Module):
                def __init__(self, width=8):
                    super().__init__()
                    self.width = width
                    self.fc = nn.Linear(width, 2)

            if __name__ == "__main__":
                print(json.dumps(reference_for_model(Net(width=16)).to_dict()))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    import json

    data = json.loads(out.stdout)
    assert data["ref"] == "train_net:Net" and data["kwargs"] == {"width": 16}
    # rebuilt in another process from the same directory
    code = (
        "import json,sys; from modelkit.runs.documents import read_model_reference as R; "
        "m = R(json.loads(sys.argv[1]), source='x').build(); print(m.fc.in_features)"
    )
    rebuilt = subprocess.run(
        [sys.executable, "-c", code, out.stdout], cwd=tmp_path, capture_output=True, text=True
    )
    assert rebuilt.stdout.strip() == "16", rebuilt.stderr


def test_unstored_required_argument_is_a_clear_error() -> None:
    from torch import nn

    class Opaque(nn.Module):
        def __init__(self, n):  # n is not stored on the instance
            super().__init__()
            self.fc = nn.Linear(n, 2)

    with pytest.raises(BadInputError, match="defined inside a function"):
        reference_for_model(Opaque(3))


@pytest.mark.parametrize(
    "bad",
    [None, [], {"ref": "no_colon"}, {"ref": "a:b", "kwargs": []}, {"ref": "a:b", "package": 1}],
)
def test_malformed_reference_tables_are_refused(bad) -> None:
    with pytest.raises(RunDirError):
        read_model_reference(bad, source="config.json")


def test_missing_package_names_what_to_install() -> None:
    ref = ModelReference(ref="not_a_pkg.models:Net", package="not-a-pkg", version="1.2")
    with pytest.raises(BadInputError) as info:
        ref.build()
    assert "not-a-pkg==1.2" in (info.value.hint or "")
