"""What the built-in trainer tells a progress display while it runs (``on_event``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """One training event: ``kind`` is ``start`` (the task and the total steps), ``step`` (a
    logged step: its loss and speed), ``epoch`` (the epoch's metrics row, held-out metrics
    included) or ``end`` (the finished run's record)."""

    kind: str
    step: int = 0
    task: str | None = None
    total_steps: int | None = None
    device: str | None = None
    run_dir: str | None = None
    loss: float | None = None
    samples_per_second: float | None = None
    per_second: float | None = None  # in the task's unit (samples, or tokens)
    row: dict[str, Any] = field(default_factory=dict)  # the metrics.jsonl row it logged
    record: dict[str, Any] | None = None
