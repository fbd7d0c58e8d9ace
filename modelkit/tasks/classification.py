"""Classification: one label per sample; accuracy (higher is better), cross-entropy loss,
per-class accuracy and the confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelkit.tasks.base import Accumulator, Metric, Task, count, model_logits

if TYPE_CHECKING:  # the run core imports the tasks: typed records for annotations only
    from modelkit.runs.documents import EvalRecord
    from modelkit.runs.parts import DataInfo


class ConfusionAccumulator(Accumulator):
    """A confusion matrix (int64, CPU) and the summed cross-entropy (float64)."""

    def __init__(self, num_classes: int | None, classes: list[str] | None = None) -> None:
        """``num_classes`` None (a loader's data that names no classes): the model's output
        width, taken from the first batch."""
        import torch

        self.classes = list(classes or [])
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.num_classes = 0
        if num_classes is not None:
            self._size(num_classes)

    def _size(self, num_classes: int) -> None:
        import torch

        self.num_classes = num_classes
        self.classes = self.classes or [str(i) for i in range(num_classes)]
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, output: Any, target: Any) -> None:
        """Add a batch: logits (N, C), labels (N,)."""
        import torch
        import torch.nn.functional as F

        logits = model_logits(output).float()
        if not self.num_classes:
            self._size(logits.shape[1])
        loss = F.cross_entropy(logits, target, reduction="sum").double()
        self.loss_sum = self.loss_sum.to(loss.device) + loss
        k = self.num_classes
        idx = (target * k + logits.argmax(1)).cpu()
        self.confusion += torch.bincount(idx, minlength=k * k).view(k, k)

    def tensors(self) -> list[Any]:
        return [self.confusion, self.loss_sum]

    def load(self, tensors: list[Any]) -> None:
        self.confusion, self.loss_sum = tensors[0].cpu(), tensors[1]

    def summary(self) -> dict[str, Any]:
        return summarize(self.confusion, self.loss_sum, classes=self.classes)


def summarize(confusion: Any, loss_sum: Any, *, classes: list[str] | None = None) -> dict[str, Any]:
    """JSON-ready metrics (accuracy, loss, per-class accuracy, confusion) from summed counts."""
    num_classes = confusion.shape[0]
    n = int(confusion.sum())
    correct = int(confusion.diag().sum())
    per_class_total = confusion.sum(1)
    names = classes or [str(i) for i in range(num_classes)]
    return {
        "accuracy": correct / n if n else 0.0,
        "loss": float(loss_sum) / n if n else float("nan"),
        "samples": n,
        "per_class_accuracy": {
            names[c]: (int(confusion[c, c]) / int(per_class_total[c]))
            if per_class_total[c]
            else None
            for c in range(num_classes)
        },
        "confusion_matrix": confusion.tolist(),
        "classes": names,
    }


class Classification(Task):
    """Image (or any) classification: logits (N, classes) against int64 labels (N,)."""

    name = "classification"
    title = "image classification"
    pipeline_tag = "image-classification"
    hub_task_name = "Image Classification"
    metrics = (
        Metric("accuracy", "Accuracy", higher_is_better=True),
        Metric("loss", "Cross-entropy loss", higher_is_better=False),
    )
    unit = "samples"
    count_key = "samples"

    def loss(
        self, output: Any, target: Any, loss_fn: Callable[..., Any], *, reduction: str = "mean"
    ) -> Any:
        logits = model_logits(output).float()
        if reduction == "mean":
            return loss_fn(logits, target)
        return loss_fn(logits, target, reduction=reduction)

    def accumulator(self, data: Any) -> ConfusionAccumulator:
        return ConfusionAccumulator(data.num_classes, list(data.classes or []))

    def check_fit(self, output: Any, target: Any, data: Any) -> str | None:
        logits = model_logits(output)
        if logits.ndim != 2:
            return f"outputs shape {list(logits.shape)}, not (batch, classes)"
        if data.num_classes and logits.shape[1] < data.num_classes:
            return f"outputs {logits.shape[1]} classes, the data has {data.num_classes}"
        if target.ndim != 1 or target.is_floating_point():
            return f"targets are {target.dtype} of shape {list(target.shape)}, not class indices"
        if len(target) and int(target.max()) >= logits.shape[1]:
            return f"a label is {int(target.max())}, the model outputs {logits.shape[1]} classes"
        return None

    def model_type(
        self, data: DataInfo, ev: EvalRecord | None, model_kwargs: dict[str, Any] | None = None
    ) -> list[str]:
        classes = (ev.classes if ev is not None else None) or data.classes or []
        shown = f" ({', '.join(map(str, classes))})" if classes else ""
        count = len(classes) if classes else "unknown"
        return [f"- **Model type:** {self.title}, {count} classes{shown}"]

    def data_lines(self, data: DataInfo, ev: EvalRecord | None) -> list[str]:
        shape = "×".join(map(str, data.input_shape or [])) or "unknown"
        held_out = data.test_size if data.test_size is not None else _count(ev, "samples")
        return [
            f"- **Split:** {data.split or 'unknown'}; train {count(data.train_size)}"
            f" samples, held-out {count(held_out)} samples",
            f"- **Input shape:** {shape}",
        ]

    def scope_line(self, name: str, data: DataInfo, *, others: bool) -> str:
        return f"- Trained on {count(data.train_size)} samples of `{name}` only; " + (
            "accuracy on other sources (other scanners, handwriting styles, resolutions, "
            "domains) was not measured."
            if not others
            else "other data was measured only where listed under Evaluation."
        )

    def eval_details(self, ev: EvalRecord) -> list[str]:
        per_class = ev.per_class_accuracy or {}
        if not per_class:
            return []
        return [
            "",
            "Per-class accuracy (a breakdown by the factor the data records: the class):",
            "",
            "| class | accuracy |",
            "|---|---|",
            *[f"| {c} | {'n/a' if a is None else f'{a:.4f}'} |" for c, a in per_class.items()],
        ]

    def limitations(self, ev: EvalRecord | None) -> list[str]:
        if ev is None:
            return []
        lines = [
            f"- The reported accuracy comes from one held-out split of {count(ev.count('samples'))} "
            "samples, one seed, no confidence interval."
        ]
        per_class = ev.per_class_accuracy or {}
        scored = [(a, c) for c, a in per_class.items() if a is not None]
        best = max((a for a, _ in scored), default=None)
        weakest = [(a, c) for a, c in sorted(scored)[:3] if a < best]
        if weakest:
            lines.append(
                "- Weakest classes: "
                + ", ".join(f"`{c}` ({a:.3f})" for a, c in weakest)
                + "; errors are not uniform across classes."
            )
        return lines


def _count(ev: EvalRecord | None, name: str) -> Any:
    """A count the evaluation states (None without an evaluation)."""
    return ev.count(name) if ev is not None else None
