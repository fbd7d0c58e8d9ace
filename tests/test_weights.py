"""Sharded and tied weights (modelkit/weights): the layout checks, the identity, the atomic
save, the shard-by-shard load, and the plain ``load_state_dict`` snippet, run for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelkit.errors import (
    IntegrityError,
    NoWeights,
    ShardMissing,
    UnexpectedShard,
    WeightsLayoutError,
    WeightsMismatch,
)
from modelkit.weights import (
    INDEX,
    SINGLE,
    loading_snippet,
    read_layout,
    save_model_weights,
    summarize,
    verified_weights,
    weights_sha256,
)
from modelkit.weights.load import empty_parameters, load_weights

TIED_MODULE = '''
import torch
from torch import nn


class TiedNet(nn.Module):
    """A digits classifier whose middle layers share one weight (tied, like an LM head)."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = hidden
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.a = nn.Linear(hidden, hidden)
        self.b = nn.Linear(hidden, hidden, bias=False)
        self.b.weight = self.a.weight  # tied: one tensor, two names
        self.head = nn.Linear(hidden, 10)
        self.register_buffer("scale", torch.tensor(0.5), persistent=False)

    def forward(self, x):
        x = torch.relu(self.fc1(x.flatten(1)))
        x = torch.relu(self.b(torch.relu(self.a(x))))
        return self.head(x) * self.scale * 2
'''
SHARD = "3KB"  # the tiny model in >= 3 shards


@pytest.fixture()
def tied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The TiedNet class, importable as ``tiedmodel`` (its folder is on sys.path)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "tiedmodel.py").write_text(TIED_MODULE)
    monkeypatch.syspath_prepend(str(pkg))
    sys.modules.pop("tiedmodel", None)
    import tiedmodel

    return tiedmodel.TiedNet


def _x() -> torch.Tensor:
    return torch.linspace(0, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)


def test_sharded_save_stores_shared_tensors_once_and_loads_back(tied, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tied()
    saved = save_model_weights(model, tmp_path / "w", max_shard_size=SHARD)
    layout = read_layout(tmp_path / "w")
    assert layout.kind == "sharded" and len(layout.headers) >= 3 and layout.index == INDEX
    assert saved.files == {n: saved.files[n] for n in layout.files}
    assert saved.shared_tensors == {"b.weight": "a.weight"} == layout.shared
    info = summarize(layout)
    assert info.num_parameters == sum(p.numel() for p in model.parameters())  # tied: once
    assert (
        info.dtypes == {"F32": info.num_parameters} and info.tensor_bytes == 4 * info.num_parameters
    )
    with empty_parameters():
        empty = tied()
    assert empty.fc1.weight.is_meta and not empty.scale.is_meta  # parameters only
    load_weights(empty, layout, name="TiedNet")
    assert empty.b.weight is empty.a.weight  # the tie is restored, not a copy
    assert torch.equal(empty(_x()), model(_x()))


def test_identity_is_the_tensors_whatever_the_layout_path_or_config(tied, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tied()
    one = save_model_weights(model, tmp_path / "one")
    many = save_model_weights(model.state_dict(), tmp_path / "x" / "many", max_shard_size=SHARD)
    save_model_weights(model, tmp_path / "again")
    assert one.layout == "single" and many.layout == "sharded"  # one path, another path
    assert one.weights_sha256 == many.weights_sha256 == weights_sha256(tmp_path / "x" / "many")
    assert (tmp_path / "one" / SINGLE).read_bytes() == (tmp_path / "again" / SINGLE).read_bytes()
    meta = read_layout(tmp_path / "one").headers[0].metadata
    assert meta == {"format": "pt", "b.weight": "a.weight"}  # no path, no config
    with torch.no_grad():
        model.head.bias.add_(1e-3)
    assert save_model_weights(model, tmp_path / "other").weights_sha256 != one.weights_sha256


def _sharded(tied, directory: Path) -> Path:
    save_model_weights(tied(), directory, max_shard_size=SHARD)
    return directory


def _edit_index(d: Path, edit) -> None:
    index = json.loads((d / INDEX).read_text())
    edit(index)
    (d / INDEX).write_text(json.dumps(index))


def _swap_first_map_entry(index: dict) -> None:
    first = sorted(index["weight_map"])[0]
    shards = sorted(set(index["weight_map"].values()))
    index["weight_map"][first] = next(s for s in shards if s != index["weight_map"][first])


DAMAGE = {
    "missing shard": (lambda d: (d / "model-00002-of-00003.safetensors").unlink(), ShardMissing),
    "extra shard": (
        lambda d: (d / "model-00004-of-00004.safetensors").write_bytes(b"x"),
        UnexpectedShard,
    ),
    "truncated shard": (
        lambda d: (d / "model-00001-of-00003.safetensors").write_bytes(
            (d / "model-00001-of-00003.safetensors").read_bytes()[:-4]
        ),
        WeightsLayoutError,
    ),
    "tensor in another shard": (
        lambda d: _edit_index(d, _swap_first_map_entry),
        WeightsLayoutError,
    ),
    "wrong total_size": (
        lambda d: _edit_index(d, lambda i: i["metadata"].update(total_size=1)),
        WeightsLayoutError,
    ),
    "non-standard shard name": (
        lambda d: _edit_index(
            d,
            lambda i: i["weight_map"].update({k: "weights-1.safetensors" for k in i["weight_map"]}),
        ),
        WeightsLayoutError,
    ),
    "shards without index": (lambda d: (d / INDEX).unlink(), UnexpectedShard),
    "both layouts": (lambda d: (d / SINGLE).write_bytes(b""), WeightsLayoutError),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_layout_is_refused_naming_the_file(tied, tmp_path: Path, case: str) -> None:
    d = _sharded(tied, tmp_path / "w")
    assert len(read_layout(d).headers) == 3  # the damage cases name shards of this layout
    damage, error = DAMAGE[case]
    damage(d)
    with pytest.raises(error) as exc:
        read_layout(d)
    assert exc.value.exit_code == 2 and exc.value.file and exc.value.file in exc.value.message


def test_no_weights_names_both_layouts_without_blaming_training(tmp_path: Path) -> None:
    with pytest.raises(NoWeights) as exc:
        read_layout(tmp_path)
    assert (
        INDEX in exc.value.message and "interrupted" not in f"{exc.value.message} {exc.value.hint}"
    )


def test_keys_are_checked_strictly_before_any_tensor_is_read(tied, tmp_path: Path) -> None:
    save_model_weights({"fc1.weight": torch.zeros(32, 784), "extra": torch.zeros(1)}, tmp_path)
    with empty_parameters():
        model = tied()
    with pytest.raises(WeightsMismatch) as exc:
        load_weights(model, read_layout(tmp_path), name="tiedmodel:TiedNet")
    assert exc.value.unexpected == ["extra"] and "head.weight" in exc.value.missing


def test_a_crash_before_the_index_never_leaves_a_readable_mixed_set(
    tied, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelkit.weights.save as save

    d = tmp_path / "w"
    save_model_weights(tied(), d)  # an earlier single-file save
    real = os.replace

    def crash_on_entry(src, dst):  # the process dies just before the index goes in
        if Path(dst).name == INDEX:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(save.os, "replace", crash_on_entry)
    with pytest.raises(KeyboardInterrupt):
        save_model_weights(tied(), d, max_shard_size=SHARD)
    with pytest.raises(UnexpectedShard):  # new shards, no index, no old file: refused by name
        read_layout(d)
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_verified_weights_names_the_shard_that_differs(tied, tmp_path: Path) -> None:
    from modelkit.weights.record import WeightsRecord

    d = _sharded(tied, tmp_path / "w")
    saved = save_model_weights(tied(), d, max_shard_size=SHARD)
    (d / "run.json").write_text(json.dumps({"status": "complete", **saved.record()}))
    assert WeightsRecord.from_fields(saved.weights_sha256, saved.record()["weights"], source="t")
    assert verified_weights(d).files == sorted(saved.files, key=lambda n: n == INDEX)
    shard = d / "model-00003-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as exc:
        verified_weights(d)
    assert (
        exc.value.exit_code == 3 and exc.value.path == str(shard) and "run.json" in str(exc.value)
    )


def test_the_plain_load_state_dict_snippet_runs(tied, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = tied()
    script = "import torch\nx = torch.linspace(0, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)\n"
    for name, shard in (("one", None), ("many", SHARD)):  # both layouts, one interpreter
        save_model_weights(model, tmp_path / name, max_shard_size=shard)
        code = loading_snippet(
            read_layout(tmp_path / name),
            reference="tiedmodel:TiedNet",
            kwargs={"hidden": 32},
            folder=repr(str(tmp_path / name)),
        )
        assert 'state["b.weight"] = state["a.weight"]' in code
        script += code + "print(model(x).tolist())\n"
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "pkg"))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == [model(_x()).tolist()] * 2


def test_a_check_only_load_maps_each_file_instead_of_reading_it(tied, tmp_path: Path) -> None:
    """``keep=False`` (a release's load check, after the hashes matched) builds every tensor on
    one mapping of its file: equal to what plain reads give, nothing copied; a misaligned
    tensor (an odd header length) is copied alone; the strict key check is the same."""
    import struct

    from modelkit.weights.layout import read_header
    from modelkit.weights.load import map_tensors, read_tensors

    d = _sharded(tied, tmp_path / "w")
    for header in read_layout(d).headers:
        path = d / header.name
        mapped, read = map_tensors(path, header), read_tensors(path, header)
        assert mapped.keys() == read.keys() and all(torch.equal(mapped[k], read[k]) for k in read)
        storages = {t.untyped_storage().data_ptr() for t in mapped.values()}
        assert len(storages) == 1  # views of one buffer...
        (t,) = {t.untyped_storage().nbytes() for t in mapped.values()}
        assert t == path.stat().st_size  # ...the size of the whole file: its mapping
    raw = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    raw += b" " * ((1 - len(raw)) % 4)  # 8 + header length: 1 more than a multiple of 4
    (tmp_path / "odd.safetensors").write_bytes(
        struct.pack("<Q", len(raw)) + raw + struct.pack("<2f", 1.5, -2.0)
    )
    header = read_header(tmp_path / "odd.safetensors")
    assert header.tensors["x"].start % 4
    assert map_tensors(tmp_path / "odd.safetensors", header)["x"].tolist() == [1.5, -2.0]
    with empty_parameters():
        model = tied()
    assert load_weights(model, read_layout(d), name="TiedNet", keep=False).fc1.weight.is_meta
    save_model_weights({"fc1.weight": torch.zeros(32, 784)}, tmp_path / "few")
    with empty_parameters():
        model = tied()
    with pytest.raises(WeightsMismatch):
        load_weights(model, read_layout(tmp_path / "few"), name="TiedNet", keep=False)
