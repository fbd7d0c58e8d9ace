"""The task registry: what a model *does* (classification, language modelling), as one seam.

Each task is one module here and one line in :data:`TASKS`; everything that depends on the
task (the loss over a batch, the held-out metrics and their direction, how a model's output is
read, the card's metadata and sections, the curves, the progress bar) asks the task::

    from modelkit.tasks import get_task
    task = get_task(record.get("task"))       # the run's task (classification when unstated)
    acc = task.accumulator(data)
    acc.update(task.forward(model, x, y), y)
    acc.summary()                             # {"perplexity": ..., "loss": ..., "tokens": ...}

See docs/tasks.md for adding a task. Importing this module does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from modelkit.errors import unknown
from modelkit.tasks.base import Accumulator, Metric, Task, model_logits

DEFAULT_TASK = "classification"
# name -> "module:Class" (imported on first use)
TASKS: dict[str, str] = {
    "classification": "modelkit.tasks.classification:Classification",
    "language-modeling": "modelkit.tasks.language_modeling:LanguageModeling",
}
_ALIASES = {"causal-lm": "language-modeling", "text-generation": "language-modeling"}
_LOADED: dict[str, Task] = {}


def get_task(name: str | None = None) -> Task:
    """The task named ``name`` (None or "": classification, the default)."""

    key = _ALIASES.get(name or DEFAULT_TASK, name or DEFAULT_TASK)
    if not isinstance(key, str) or key not in TASKS:
        raise unknown("task", str(name), TASKS, hint="name one of the registered tasks")
    if key not in _LOADED:
        module, _, attr = TASKS[key].partition(":")
        _LOADED[key] = getattr(importlib.import_module(module), attr)()
    return _LOADED[key]


def list_tasks() -> dict[str, Task]:
    """Every registered task, by name."""
    return {name: get_task(name) for name in TASKS}


def task_of(record: Any) -> Task:
    """The task a typed run record (``RunRecord``) states; classification when it states none."""
    return get_task(record.task)


def metric_directions() -> dict[str, dict[str, str]]:
    """``{task: {metric: "higher" | "lower"}}``: what the benchmark gate reads."""
    return {name: task.directions() for name, task in list_tasks().items()}


__all__ = [
    "DEFAULT_TASK",
    "TASKS",
    "Accumulator",
    "Metric",
    "Task",
    "get_task",
    "list_tasks",
    "metric_directions",
    "model_logits",
    "task_of",
]
