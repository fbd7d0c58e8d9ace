"""The typed parts of run.json, one small frozen dataclass per block.

Each is read by :func:`modelkit.runs.typed.read_typed` (annotations are the schema; unknown keys
are ignored here and kept in the record's ``raw`` for writers). Every field is optional: an own
loop, a framework callback and ``modelkit train`` record different subsets, and an older
modelkit wrote fewer. ``as_dict()`` gives a block back as data (for diffs and reports that
list every field).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelkit.runs.typed import to_plain


class _Part:
    def as_dict(self) -> dict[str, Any]:
        """The block as JSON-ready data (every recorded key, typed or not)."""
        return to_plain(self)


@dataclass(frozen=True)
class GitInfo(_Part):
    """Where the code stood: ``commit`` (None outside a git repository), ``dirty``."""

    commit: str | None = None
    dirty: bool | None = None
    branch: str | None = None
    root: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class CommandInfo(_Part):
    """The command line that made the run (secrets already redacted)."""

    argv: list[str] = field(default_factory=list)
    cwd: str | None = None
    executable: str | None = None
    orig_argv: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Normalization(_Part):
    """Per-channel input normalisation."""

    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class DataInfo(_Part):
    """What the run trained on: its spec (``digits``), public name, fingerprint, and what the
    task records about it (classes and input shape; token counts and context length)."""

    spec: str | None = None
    name: str | None = None
    fingerprint: str | None = None
    method: str | None = None
    size: int | None = None
    source: str | None = None
    split: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    classes: list[Any] | None = None
    input_shape: list[int] | None = None
    normalize: Normalization | None = None
    context_length: int | None = None
    vocab_size: int | None = None
    tokenizer: str | None = None
    chars: str | None = None
    train_tokens: int | None = None
    test_tokens: int | None = None
    skipped_files: int | list[Any] | None = None  # image folders: how many were skipped
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Determinism(_Part):
    """The seeding and determinism settings in force (``seeded``: what was seeded, or a note
    that the script seeded itself)."""

    enabled: bool | None = None
    seed: int | None = None
    threads: int | None = None
    interop_threads: int | None = None
    use_deterministic_algorithms: bool | None = None
    cudnn_benchmark: bool | None = None
    cudnn_deterministic: bool | None = None
    cublas_workspace_config: str | None = None
    data_order: str | None = None
    seeded: list[str] | str | None = None
    rank_seed: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EnvInfo(_Part):
    """The software and hardware the run used."""

    python: str | None = None
    platform: str | None = None
    torch: str | None = None
    numpy: str | None = None
    modelkit: str | None = None
    cuda: str | None = None
    cudnn: int | None = None
    device_type: str | None = None
    device_name: str | None = None
    cpu: str | None = None
    cpu_count: int | None = None
    threads: int | None = None
    cpu_capability: str | None = None
    gpu_count: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Distributed(_Part):
    """How many processes trained the run, and how (``strategy``: ``fsdp2`` when sharded)."""

    world_size: int = 1
    backend: str | None = None
    strategy: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Accel(_Part):
    """The speed choices of a ``modelkit train`` run."""

    precision: str | None = None
    data_placement: str | None = None
    compile: bool | None = None
    channels_last: bool | None = None
    fsdp_units: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Reference(_Part):
    """How to rebuild the model: ``ref`` (``module:attr``) called with ``kwargs``, from
    ``package`` at ``version``; or a config object (``kind``: ``config``)."""

    ref: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    package: str | None = None
    version: str | None = None
    kind: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def attr(self) -> str:
        """The factory's or class's name (``mnist_mlp`` of ``modelkit.models.mlp:mnist_mlp``)."""
        return (self.ref or "").rpartition(":")[2]


@dataclass(frozen=True)
class WeightsInfo(_Part):
    """The weights files of the run: ``layout`` (``single`` | ``sharded``), each file's sha256,
    the index, the tensors' total size and the shared tensors (stored under one name)."""

    layout: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    identity: str | None = None
    index: str | None = None
    total_size: int | None = None
    shared_tensors: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Best(_Part):
    """The best epoch's weights, kept by ``keep_best``."""

    metric: str | None = None
    value: float | None = None
    epoch: int | None = None
    step: int | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Timings(_Part):
    """Seconds spent (``train_s``, ``data_load_s``, ``checkpoint_s``, ...)."""

    train_s: float | None = None
    data_load_s: float | None = None
    checkpoint_s: float | None = None
    total_s: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def seconds(self) -> dict[str, float]:
        """Every recorded timing (name -> seconds), typed or not."""
        return {k: float(v) for k, v in self.as_dict().items() if isinstance(v, (int, float))}
