"""The CLI's wording table (modelkit/cli/_errors.py): one row per mapped error type, and the
typed errors' fields (code branches on types and fields, never on wording)."""

from __future__ import annotations

import pytest

from modelkit import errors as E
from modelkit.cli._errors import CLI_ERROR_MAPPINGS, cli_wording

ROWS = [
    (E.WorldSizeMismatch(2, 1, what="checkpoint step 4"), "2 process(es)", "--nproc-per-node 2"),
    (E.NotImportable("nope.mod:f", "no module named 'nope'", what="loss"), "loss", "importable"),
    (E.ModelNotImportable("nope.mod:Net", "no module named 'nope'"), "model", "importable"),
    (E.UserCodeError("data loader", "pkg.data:load", ValueError("bad")), "ValueError", "DEBUG"),
    (E.UnrecordedWeights("runs/a"), "records no weights_sha256", "--trust-unrecorded"),
    (E.ShardingUnsupported("processes", "shard=True needs 2+ processes"), "2+", "--nproc-per"),
    (E.ShardingUnsupported("option", "not with keep_best", option="keep_best"), "keep", "--shard"),
]


@pytest.mark.parametrize(("exc", "in_message", "in_hint"), ROWS, ids=lambda r: type(r).__name__)
def test_each_mapped_type_is_worded_for_the_cli(exc, in_message, in_hint):
    message, hint = cli_wording(exc)
    assert in_message in message and "\n" not in message
    assert hint and in_hint in hint


def test_every_table_row_has_a_test_row():
    tested = {type(exc) for exc, _, _ in ROWS}
    assert all(any(issubclass(t, cls) for t in tested) for cls in CLI_ERROR_MAPPINGS)


def test_typed_errors_carry_their_fields():
    exc = E.UnknownName("model", "mnist-mpl", ["mnist-mlp", "small-cnn"])
    assert (exc.kind, exc.name, exc.choices) == ("model", "mnist-mpl", ["mnist-mlp", "small-cnn"])
    assert "did you mean 'mnist-mlp'" in exc.message and exc.exit_code == 2
    assert E.WorldSizeMismatch(4, 2).saved == 4
    assert E.IntegrityError("w.safetensors", expected="a" * 64, actual="b" * 64).exit_code == 3
    assert E.UserCodeError("loss", "m:f", RuntimeError("x")).exit_code == 1


def test_an_explicit_hint_wins_over_the_table():
    exc = E.NotImportable("a.b:c", "no module named 'a'", hint="pip install a-models")
    assert cli_wording(exc)[1] == "pip install a-models"
