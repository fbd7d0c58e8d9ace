"""What a task is: the part of training, evaluation and the card that depends on what the model
*does* (classify images, model language), kept in one class so the rest stays generic.

A :class:`Task` owns its loss over a batch, a streaming metric accumulator (``update`` per batch,
sums that ranks add up, ``summary``), its metrics with their direction (primary first), how it
reads a model's output (:func:`model_logits`), and what the card and the progress bar show.
Importing this module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from modelkit.errors import BadInputError, unknown

if TYPE_CHECKING:  # the run core imports the tasks: typed records for annotations only
    from modelkit.runs.documents import EvalRecord
    from modelkit.runs.parts import DataInfo


@dataclass(frozen=True)
class Metric:
    """One evaluation metric: its key in an eval result, its label and its direction."""

    key: str  # in eval.json and, as ``test_<key>``, in metrics.jsonl epoch rows
    label: str  # for tables ("Accuracy", "Perplexity")
    higher_is_better: bool
    hub_type: str = ""  # model-index metric type (default: the key)

    @property
    def direction(self) -> str:
        """``higher`` or ``lower`` (is better)."""
        return "higher" if self.higher_is_better else "lower"

    def better(self, new: float, old: float) -> bool:
        """True when ``new`` is strictly better than ``old``."""
        return new > old if self.higher_is_better else new < old


def model_logits(output: Any) -> Any:
    """The logits in a model's output: a tensor as it is, a tuple/list's first element
    (nanoGPT's ``(logits, loss)``), or an output object's ``.logits`` (transformers'
    ``ModelOutput``, also when it is a mapping)."""

    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, dict):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if logits is None and hasattr(output, "shape"):
        logits = output
    if logits is None or not hasattr(logits, "shape"):
        raise BadInputError(
            f"the model returned {type(output).__name__}, not logits",
            hint="return a tensor, a tuple whose first element is the logits, "
            "or an object with a .logits attribute",
        )
    return logits


class Accumulator:
    """Streaming metric state of one evaluation: ``update`` per batch, then ``summary``.

    ``tensors()`` are sums (so ranks holding shards of the held-out set can all-reduce them);
    ``load(tensors)`` puts the reduced sums back.
    """

    def update(self, output: Any, target: Any) -> None:
        """Add one batch (the model's raw output, the batch's targets)."""
        raise NotImplementedError

    def tensors(self) -> list[Any]:
        """The state as tensors of sums (for an all-reduce)."""
        raise NotImplementedError

    def load(self, tensors: list[Any]) -> None:
        """Replace the state with ``tensors`` (the all-reduced sums)."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """The JSON-ready evaluation result (the task's metrics, ``loss``, a count)."""
        raise NotImplementedError


class Task:
    """A kind of model. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    title: ClassVar[str]  # "image classification"
    pipeline_tag: ClassVar[str]  # the Hub's pipeline tag and model-index task type
    hub_task_name: ClassVar[str]  # the model-index task name
    metrics: ClassVar[tuple[Metric, ...]]  # the primary metric first
    unit: ClassVar[str]  # what a count is: "samples", "tokens"
    count_key: ClassVar[str]  # the count in an eval result ("samples", "tokens")

    # ---- metrics --------------------------------------------------------------------------
    @property
    def primary(self) -> Metric:
        """The metric that ranks checkpoints, gates and is re-checked by verify."""
        return self.metrics[0]

    def metric(self, key: str) -> Metric:
        """The metric named ``key`` (``accuracy`` or ``test_accuracy``)."""

        key = key.removeprefix("test_")
        for m in self.metrics:
            if m.key == key:
                return m
        raise unknown(
            f"{self.name} metric",
            key,
            [f"test_{m.key}" for m in self.metrics],
            hint="keep_best takes one of the task's held-out metrics",
        )

    def directions(self) -> dict[str, str]:
        """``{metric: "higher" | "lower"}`` (what the benchmark gate reads)."""
        return {m.key: m.direction for m in self.metrics}

    def epoch_row(self, result: dict[str, Any]) -> dict[str, float]:
        """The held-out metrics of an epoch row in metrics.jsonl: ``test_<key>``."""
        return {f"test_{m.key}": float(result[m.key]) for m in self.metrics if m.key in result}

    def check_result(self, result: Any, *, source: str) -> None:
        """Raise ValueError/KeyError/TypeError unless ``result`` is an evaluation of this task."""
        if not isinstance(result, dict):
            raise TypeError("not a JSON object")
        for m in self.metrics:
            if (m is self.primary or m.key == "loss" or m.key in result) and not math.isfinite(
                float(result[m.key])
            ):
                raise ValueError(f"{m.key} is not a finite number")
        int(result[self.count_key])

    # ---- training -------------------------------------------------------------------------
    def loss(
        self, output: Any, target: Any, loss_fn: Callable[..., Any], *, reduction: str = "mean"
    ) -> Any:
        """The training loss of a batch (``reduction="sum"``: summed over the batch's units)."""
        raise NotImplementedError

    def units(self, target: Any) -> int:
        """How many units (samples, tokens) a batch's targets hold."""
        return len(target)

    def accumulator(self, data: Any) -> Accumulator:
        """A fresh accumulator for evaluating on ``data`` (its classes, tokenizer ...)."""
        raise NotImplementedError

    def forward(self, model: Any, inputs: Any, target: Any) -> Any:
        """The model's output on ``inputs`` (what the accumulator's ``update`` takes)."""
        return model(inputs)

    def check_fit(self, output: Any, target: Any, data: Any) -> str | None:
        """Why a model's output on a batch does not fit its targets and the data (None: fits)."""
        return None

    # ---- text -----------------------------------------------------------------------------
    def progress(self, row: dict[str, Any]) -> str:
        """The progress bar's held-out metric text of an epoch row."""
        m = self.primary
        value = row.get(f"test_{m.key}")
        return f"{m.key} {value:.4f}" if isinstance(value, (int, float)) else ""

    def model_type(
        self, data: DataInfo, ev: EvalRecord | None, model_kwargs: dict[str, Any] | None = None
    ) -> list[str]:
        """The card's lines about what the model is (its task facts): from run.json's data
        block, the evaluation and the model's keyword arguments."""
        return [f"- **Model type:** {self.title}"]

    def eval_rows(self, ev: dict[str, Any]) -> list[tuple[str, str]]:
        """``(metric, value)`` rows of an evaluation's table (card and CLI)."""
        rows = [(m.label, f"{float(ev[m.key]):.4f}") for m in self.metrics if m.key in ev]
        count = ev.get(self.count_key)
        return rows + [(self.count_key, f"{count:,}" if isinstance(count, int) else str(count))]

    def eval_details(self, ev: EvalRecord) -> list[str]:
        """Markdown lines after the card's evaluation table (a breakdown, if the task has one)."""
        return []

    def limitations(self, ev: EvalRecord | None) -> list[str]:
        """Task-specific lines for the card's limitations."""
        return []

    def curves(self) -> tuple[str, str]:
        """``(epoch-row key, axis label)`` of the card's per-epoch held-out panel."""
        m = self.primary
        return f"test_{m.key}", f"held-out {m.label.lower()}"

    def data_lines(self, data: DataInfo, ev: EvalRecord | None) -> list[str]:
        """The card's lines about the split and the shape of a sample."""
        return []

    def scope_line(self, name: str, data: DataInfo, *, others: bool) -> str:
        """The card's first limitation: what the model was trained on, what was not measured."""
        return f"- Trained on `{name}` only."


def count(value: Any, *, missing: str = "unknown") -> str:
    """``1,234`` for a number, ``missing`` otherwise (a card never says None)."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else missing
