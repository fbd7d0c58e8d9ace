"""Weights written one file at a time, from a source that produces the tensors on demand.

:func:`save_model_weights` needs the whole state in memory. A sharded (FSDP2) model has no
whole state anywhere: its final weights are gathered file by file instead.

- :func:`plan_weights` cuts a state into the Hub's files from *stand-ins* only (a meta tensor
  of the whole tensor's shape and dtype, or the tensor itself), with the same huggingface_hub
  steps :func:`save_model_weights` runs (``_clean_state_dict_for_safetensors``: shared
  storages stored once; ``split_torch_state_dict_into_shards``: files of at most
  ``max_shard_size``, in the state's order). Every process that takes part in producing the
  tensors computes the same plan from the same stand-ins.
- :func:`save_streamed_weights` asks the source (``fetch(names)``) for one file's tensors at a
  time, writes that file as huggingface_hub's ``save_torch_state_dict`` does (same per-file
  metadata, same index) and drops them; the folder is then canonicalised, hashed and moved in
  atomically like any other save (:func:`~modelkit.weights.save.write_weights_folder`).

Given tensors equal to a state's, the files are byte-identical to :func:`save_model_weights`
of that state (``tests/test_fsdp_meta_stream.py`` compares them). The writer holds one file's
tensors at a time (plus safetensors' serialised copy of that file while it is written).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.weights.layout import INDEX
from modelkit.weights.save import SavedWeights, parse_shard_size, write_weights_folder

Fetch = Callable[[list[str]], dict[str, Any]]


@dataclass(frozen=True)
class WeightsPlan:
    """Which tensors go into which file, in the order the files are written."""

    files: tuple[tuple[str, tuple[str, ...]], ...]  # (file name, tensor names)
    tensor_to_file: dict[str, str]
    total_size: int  # bytes of tensor data (the index's metadata)
    shared: dict[str, str] = field(default_factory=dict)  # dropped name -> kept name
    file_bytes: dict[str, int] = field(default_factory=dict)  # file name -> tensor bytes

    @property
    def sharded(self) -> bool:
        """More than one file (then an index is written)."""
        return len(self.files) > 1

    @property
    def largest_file_tensor_bytes(self) -> int:
        """The tensor bytes of the biggest file (what its writer holds at once)."""
        return max(self.file_bytes.values(), default=0)


def plan_weights(specs: dict[str, Any], max_shard_size: int | str | None = None) -> WeightsPlan:
    """The files :func:`save_model_weights` would write for a state like ``specs`` (name ->
    stand-in: a meta tensor of the whole tensor's shape and dtype, or a real tensor)."""
    from huggingface_hub import constants, split_torch_state_dict_into_shards
    from huggingface_hub.serialization._torch import (
        _clean_state_dict_for_safetensors,
        get_torch_storage_size,
    )

    limit = parse_shard_size(max_shard_size)
    shared: dict[str, str] = {}
    state = _clean_state_dict_for_safetensors(dict(specs), shared, force_contiguous=True)
    split = split_torch_state_dict_into_shards(
        state, filename_pattern=constants.SAFETENSORS_WEIGHTS_FILE_PATTERN, max_shard_size=limit
    )
    files = tuple((f, tuple(names)) for f, names in split.filename_to_tensors.items())
    sizes = {f: sum(get_torch_storage_size(state[n]) for n in names) for f, names in files}
    return WeightsPlan(
        files=files,
        tensor_to_file=dict(split.tensor_to_filename),
        total_size=int(split.metadata["total_size"]),
        shared=shared,
        file_bytes=sizes,
    )


def save_streamed_weights(plan: WeightsPlan, fetch: Fetch, directory: Path | str) -> SavedWeights:
    """Write ``plan``'s files into ``directory``, asking ``fetch`` for one file's tensors at a
    time (in the plan's order); atomic as :func:`save_model_weights`."""
    return write_weights_folder(directory, lambda tmp: _write_files(plan, fetch, tmp))


def _write_files(plan: WeightsPlan, fetch: Fetch, folder: Path) -> None:
    """What huggingface_hub's ``save_torch_state_dict`` writes, one file's tensors at a time."""
    from safetensors.torch import save_file

    per_file = {"format": "pt", **({} if plan.sharded else plan.shared)}
    for filename, names in plan.files:
        tensors = fetch(list(names))
        shard = {name: tensors[name].contiguous() for name in names}
        del tensors
        save_file(shard, str(folder / filename), metadata=per_file)
        del shard
    if plan.sharded:
        index = {
            "metadata": {"total_size": plan.total_size, **plan.shared},
            "weight_map": plan.tensor_to_file,
        }
        (folder / INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
