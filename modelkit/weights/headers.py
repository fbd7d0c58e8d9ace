"""What the safetensors headers say about the weights, without reading a tensor: parameter
count, dtypes, shapes and bytes, for either layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.weights.layout import WeightsLayout, read_layout


@dataclass(frozen=True)
class WeightsSummary:
    """The weights as their headers describe them."""

    layout: str  # "single" | "sharded"
    files: dict[str, int]  # every file of the layout -> its size in bytes
    num_parameters: int  # elements of every stored tensor (a shared tensor counts once)
    num_tensors: int
    dtypes: dict[str, int]  # dtype -> number of elements
    shapes: dict[str, list[int]]  # tensor name -> shape
    tensor_bytes: int  # bytes of tensor data
    metadata: dict[str, str] = field(default_factory=dict)  # the first file's __metadata__
    shared: dict[str, str] = field(default_factory=dict)  # dropped name -> stored name

    @property
    def file_bytes(self) -> int:
        """The bytes of every file of the layout together."""
        return sum(self.files.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts (the keys the card and the manifest use)."""
        return {
            "layout": self.layout,
            "files": dict(self.files),
            "file_bytes": self.file_bytes,
            "num_parameters": self.num_parameters,
            "num_tensors": self.num_tensors,
            "dtypes": dict(self.dtypes),
            "tensors": {k: {"shape": v} for k, v in self.shapes.items()},
            "tensor_bytes": self.tensor_bytes,
            "metadata": dict(self.metadata),
            "shared_tensors": dict(self.shared),
        }


def summarize(directory: Path | str | WeightsLayout) -> WeightsSummary:
    """The :class:`WeightsSummary` of a directory's weights (or of a layout already read)."""
    layout = directory if isinstance(directory, WeightsLayout) else read_layout(directory)
    dtypes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    params = 0
    for header in layout.headers:
        for name, t in header.tensors.items():
            params += t.numel
            dtypes[t.dtype] = dtypes.get(t.dtype, 0) + t.numel
            shapes[name] = list(t.shape)
    files = {h.name: h.size for h in layout.headers}
    if layout.index is not None:
        files[layout.index] = layout.path(layout.index).stat().st_size
    return WeightsSummary(
        layout=layout.kind,
        files=files,
        num_parameters=params,
        num_tensors=len(shapes),
        dtypes=dict(sorted(dtypes.items())),
        shapes=dict(sorted(shapes.items())),
        tensor_bytes=layout.total_size,
        metadata=dict(layout.headers[0].metadata),
        shared=dict(layout.shared),
    )
