"""What ``modelkit repro`` reports, typed: the verdict, the two sides, the first divergence, the
control, and (``--against``) the environment diff and the comparison with the recorded run.

The library returns these frozen dataclasses; ``modelkit repro`` renders them by attribute and
writes ``to_dict()`` as its JSON report. A field marked :data:`OMIT_NONE` is left out of the
JSON when None (the report has always left those keys out rather than writing ``null``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from modelkit.runs.parts import Determinism, Distributed, EnvInfo, ReproCommand
from modelkit.runs.typed import to_plain

OMIT_NONE = {"omit_none": True}


def plain(obj: Any) -> Any:
    """A report as JSON-ready data: every field, but an :data:`OMIT_NONE` one only when set;
    run.json's blocks (with their ``raw``) as recorded."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if any(f.name == "raw" for f in dataclasses.fields(obj)):
            return to_plain(obj)
        return {
            f.name: plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (getattr(obj, f.name) is None and "omit_none" in f.metadata)
        }
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True)
class Pair:
    """One value per side (``a``: the first run, ``b``: the second or the control)."""

    a: Any
    b: Any


@dataclass(frozen=True)
class TensorDiff:
    """A tensor that differs: max abs diff, max ULP distance and how many elements differ; or
    a ``problem`` (missing on one side, another shape or dtype)."""

    name: str
    problem: str | None = field(default=None, metadata=OMIT_NONE)
    max_abs_diff: float | None = field(default=None, metadata=OMIT_NONE)
    max_ulp: int | None = field(default=None, metadata=OMIT_NONE)
    elements_differ: int | None = field(default=None, metadata=OMIT_NONE)
    numel: int | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class ToleranceRow:
    """A tensor's max abs diff against the recorded run (None: missing or reshaped)."""

    name: str
    max_abs_diff: float | None
    within: bool


@dataclass(frozen=True)
class FirstDivergence:
    """Where two sides' step fingerprints part: the first different step (None: none), the
    last equal one before it, and how many common steps were compared."""

    step: int | None
    last_equal: int | None
    compared: int


@dataclass(frozen=True)
class MetricsDifference:
    """The first metrics row that differs (both rows), or the row counts when one side has more."""

    row: int
    a: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)
    b: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)
    a_rows: int | None = field(default=None, metadata=OMIT_NONE)
    b_rows: int | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class MetricsComparison:
    """The step and epoch metrics rows compared exactly (timing fields ignored)."""

    identical: bool
    rows: int
    first_difference: MetricsDifference | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class Divergence:
    """The first divergent step, the tensors that differ there and the two losses (when the
    logged losses differ)."""

    step: int
    tensors: list[TensorDiff] = field(default_factory=list)
    loss: Pair | None = None


@dataclass(frozen=True)
class Control:
    """The negative control: a run with another seed, which must differ."""

    seed: int
    differs: bool
    first_divergent_step: int | None
    tensors: list[TensorDiff] = field(default_factory=list)


@dataclass(frozen=True)
class ReproTimings:
    """Seconds: the side-by-side runs (two-run modes) and the whole verb."""

    runs_s: float | None = field(default=None, metadata=OMIT_NONE)
    total_s: float | None = None


@dataclass(frozen=True)
class Comparison:
    """Two sides compared: final state sha256, step fingerprints, metrics rows and weights."""

    identical: bool
    steps: int
    fingerprints_compared: int
    state_sha256: Pair
    weights_sha256: Pair | None
    metrics: MetricsComparison
    seconds: Pair
    divergence: Divergence | None = field(default=None, metadata=OMIT_NONE)

    def fields(self) -> dict[str, Any]:
        """The comparison's fields (to build a report around it)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(Comparison)}


@dataclass(frozen=True)
class TwiceReport(Comparison):
    """``modelkit repro CONFIG|RUN`` (``mode`` ``twice``) or ``repro -- CMD`` (``command``):
    the comparison of two fresh runs, what they ran and with which environment."""

    mode: str = "twice"
    target: str = ""
    target_kind: str = "config"
    config_sha256: str | None = None  # twice only
    command: ReproCommand | None = None  # command only
    seed: int | None = None  # command only
    perturbed: str | None = None
    env: EnvInfo | None = None
    determinism: Determinism | None = None
    distributed: Distributed | None = None
    timings: ReproTimings = field(default_factory=ReproTimings)
    control: Control | None = field(default=None, metadata=OMIT_NONE)
    work_dir: str | None = None

    @property
    def world_size(self) -> int:
        """Processes per side (1 unless distributed)."""
        return (self.distributed.world_size if self.distributed else None) or 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (a command's report has ``command`` and ``seed``, a config's
        ``config_sha256``)."""
        out = plain(self)
        for key in ("command", "seed") if self.mode == "twice" else ("config_sha256",):
            del out[key]
        return out


@dataclass(frozen=True)
class EnvChange:
    """An environment field that differs (``a``: recorded, ``b``: now); ``matters``: it rules
    out bitwise equality."""

    field: str
    a: Any
    b: Any
    matters: bool


@dataclass(frozen=True)
class DataFingerprints:
    """The training data's fingerprint, recorded and now."""

    recorded: str | None
    now: str | None


@dataclass(frozen=True)
class WeightsShas:
    """The weights' sha256, recorded and regenerated."""

    recorded: str | None
    regenerated: str | None


@dataclass(frozen=True)
class AgainstReport:
    """``modelkit repro --against RUN``: a regenerated run compared with the recorded one."""

    target: str
    trainer: str
    command: ReproCommand | None
    verdict: str
    identical: bool
    ok: bool
    bitwise_expected: bool
    atol: float | None
    env_diff: list[EnvChange]
    data_fingerprint: DataFingerprints
    steps: int
    fingerprints_compared: int
    first_divergent_step: int | None
    weights_compared: bool
    tensors: list[TensorDiff]
    tolerance: list[ToleranceRow] | None
    weights_sha256: WeightsShas
    mode: str = "against"
    timings: ReproTimings = field(default_factory=ReproTimings)
    work_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return plain(self)
