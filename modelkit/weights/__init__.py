"""Model weights, in the Hugging Face layouts: one ``model.safetensors``, or shards
(``model-0000k-of-0000n.safetensors``) with ``model.safetensors.index.json``.

- :mod:`~modelkit.weights.layout` — :func:`read_layout`: the layout from headers only, checked
  (index and shards agree; a damaged, missing or extra shard is named);
  :func:`~modelkit.weights.headers.summarize`: parameter count, dtypes, shapes, bytes.
- :mod:`~modelkit.weights.save` — :func:`save_model_weights` (huggingface_hub's splitter,
  shared tensors stored once, canonical headers, atomic).
- :mod:`~modelkit.weights.stream` — :func:`plan_weights` (the files, from shapes and dtypes)
  and :func:`save_streamed_weights` (one file's tensors at a time, same bytes).
- :mod:`~modelkit.weights.hashing` — streaming sha256 per file and the weights' identity
  (``weights_sha256``: one definition for both layouts, tensors only).
- :mod:`~modelkit.weights.load` — build on ``meta``, load shard by shard with
  ``assign=True``, restore shared tensors, strict typed key checks.
- :mod:`~modelkit.weights.verify` — :func:`verified_weights`: every file against run.json's
  record (and a release's manifest), naming the file that differs.
- :mod:`~modelkit.weights.record` — run.json's ``weights`` object, read once, typed.
- :mod:`~modelkit.weights.snippet` — the plain ``load_state_dict`` snippet for a card.

Importing this package does not import torch.
"""

from modelkit.weights.hashing import hash_file, weights_sha256
from modelkit.weights.headers import WeightsSummary, summarize
from modelkit.weights.layout import INDEX, SINGLE, WeightsLayout, has_weights, read_layout
from modelkit.weights.record import WeightsRecord, read_weights_record
from modelkit.weights.save import SavedWeights, save_model_weights
from modelkit.weights.snippet import loading_snippet
from modelkit.weights.stream import WeightsPlan, plan_weights, save_streamed_weights
from modelkit.weights.verify import identity_of, verified_weights

__all__ = [
    "INDEX",
    "SINGLE",
    "SavedWeights",
    "WeightsLayout",
    "WeightsPlan",
    "WeightsRecord",
    "WeightsSummary",
    "has_weights",
    "hash_file",
    "identity_of",
    "loading_snippet",
    "plan_weights",
    "read_layout",
    "read_weights_record",
    "save_model_weights",
    "save_streamed_weights",
    "summarize",
    "verified_weights",
    "weights_sha256",
]
