"""``ModelkitCallback`` for ``transformers.Trainer``: the Trainer's run, recorded by modelkit.

::

    from modelkit.integrations.transformers import ModelkitCallback

    trainer = Trainer(model=model, args=args, train_dataset=train_ds,
                      processing_class=tokenizer, callbacks=[ModelkitCallback("runs/exp")])
    trainer.train()   # or trainer.train(resume_from_checkpoint=True) after a kill

The run directory is the one :func:`modelkit.start_run` writes (``MODELKIT_RUN_DIR`` replaces
``path``): the TrainingArguments as config, the data fingerprint, one metrics row per optimizer
step (the Trainer's logs merged in, eval metrics included), state fingerprints, the model's
rebuild reference (a transformers model: its config + class, so ``AutoModel…from_pretrained``
loads the run) and, at the end, the weights and the tokenizer the Trainer was given.

Seeding: the Trainer seeds from ``args.seed``; ``MODELKIT_SEED`` replaces it (and
``MODELKIT_DETERMINISTIC=1`` turns on ``full_determinism``) before the Trainer draws its data
order, so ``modelkit repro -- python train.py`` and its ``--control`` work. Resuming: the
Trainer's own ``resume_from_checkpoint`` restores model, optimizer, scheduler, RNG states and
the data position; the callback continues the run directory from that step (rows a killed
attempt logged after the checkpoint are dropped). With ``MODELKIT_RUN_DIR`` set, the
Trainer's checkpoints go to ``<run dir>.trainer`` so side-by-side runs do not share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from modelkit.errors import BadInputError

    raise BadInputError(
        f"modelkit.integrations.transformers needs transformers: {exc}",
        hint="pip install 'modelkit[transformers]'",
    ) from None

from modelkit.integrations._common import (
    clean_config,
    determinism_block,
    env_deterministic,
    env_seed,
    save_tokenizer,
)
from modelkit.runs.seeding import seeded_by

__all__ = ["ModelkitCallback"]

_TIMING_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second")
_SUMMARY_KEYS = (*_TIMING_KEYS, "train_loss", "total_flos")  # the Trainer's end-of-train log


@dataclass
class _PendingRow:
    """The row of the step that just ended: its step and the values logged for it so far."""

    step: int
    values: dict[str, Any] = field(default_factory=dict)


class ModelkitCallback(TrainerCallback):
    """Record the Trainer's training as a modelkit run at ``path`` (see the module docstring).

    ``data``: what to fingerprint (default: the Trainer's train dataset); ``overwrite``:
    replace a finished run at ``path``; ``fingerprint_every``: K for the state fingerprint;
    ``save_tokenizer``: write the Trainer's tokenizer/processor into the run (default True);
    ``reference``/``model_kwargs``/``name``/``task``/``eval_transform``: as for :func:`modelkit.start_run` (the
    task defaults to the model class's: ``…ForCausalLM`` -> ``"language-modeling"``,
    ``…ForSequenceClassification``/``…ForImageClassification`` -> ``"classification"``).
    """

    def __init__(
        self,
        path: str | Path = "runs/exp",
        *,
        data: Any = None,
        overwrite: bool = False,
        fingerprint_every: int = 25,
        save_tokenizer: bool = True,
        reference: Any = None,
        model_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        task: str | None = None,
        eval_transform: Any = None,
    ) -> None:
        self.path = Path(path)
        self.task, self.eval_transform = task, eval_transform
        self.data = data
        self.overwrite = overwrite
        self.fingerprint_every = fingerprint_every
        self.save_tokenizer = save_tokenizer
        self.reference, self.model_kwargs, self.name = reference, model_kwargs, name
        self.run: Any = None
        self._pending: _PendingRow | None = None  # the row of the step that just ended
        self._summary: dict[str, Any] = {}
        self._eval: dict[str, Any] = {}

    # ---- seeding: before the Trainer builds its data order ------------------------------
    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """``MODELKIT_SEED`` / ``MODELKIT_DETERMINISTIC`` / ``MODELKIT_RUN_DIR`` reach the
        Trainer: its seed (data order, dropout), full determinism, its checkpoint folder."""
        import os

        from modelkit.tracking import RUN_DIR_ENV

        seed, deterministic = env_seed(), env_deterministic()
        if seed is not None:
            args.seed = seed
        if deterministic:
            args.full_determinism = True
        if seed is not None or deterministic:
            from transformers.trainer_utils import enable_full_determinism, set_seed

            if args.full_determinism:
                enable_full_determinism(args.seed)
            else:
                set_seed(args.seed)
        if os.environ.get(RUN_DIR_ENV):
            args.output_dir = os.path.abspath(os.environ[RUN_DIR_ENV]) + ".trainer"

    # ---- the run ---------------------------------------------------------------------------
    def on_train_begin(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        """Open the run (continue it when the Trainer resumed from a checkpoint)."""
        import modelkit

        loader = train_dataloader
        data = self.data if self.data is not None else getattr(loader, "dataset", None)
        step = int(state.global_step)
        # the framework seeded itself: its determinism is recorded, nothing is re-seeded
        with seeded_by(determinism_block(args.seed, seeded_by="transformers.Trainer (args.seed)")):
            self.run = modelkit.start_run(
                self.path,
                config=clean_config(args.to_dict()),
                model=model,
                data=data,
                reference=self.reference,
                model_kwargs=self.model_kwargs,
                name=self.name,
                task=self.task or _task_of(model),
                eval_transform=self.eval_transform,
                overwrite=self.overwrite,
                resume=step > 0,
                fingerprint_every=self.fingerprint_every,
            )
        if step > 0:
            self.run.resume_at(step, checkpoint=_checkpoint_name(args, step))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._log_pending()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._log_pending()
        self._pending = _PendingRow(int(state.global_step), {"epoch": state.epoch})

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        """Merge the Trainer's logs into the step's row (train loss, lr, eval metrics)."""
        values = {k: v for k, v in _numbers(logs or {}).items() if k != "epoch"}  # the row has it
        self._summary.update({k: values.pop(k) for k in _SUMMARY_KEYS if k in values})
        self._eval.update({k: v for k, v in values.items() if k.startswith("eval_")})
        pending = self._pending
        if values and pending is not None and pending.step == int(state.global_step):
            pending.values.update(values)  # a step's row is written when the next step begins

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The Trainer wrote a checkpoint: the rows up to it are on disk too."""
        if self.run is not None:
            self._log_pending()
            self.run.flush()

    def on_train_end(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        """Weights, tokenizer, eval metrics and timings; the run is published."""
        if self.run is None:
            return
        self._log_pending()
        if self.save_tokenizer:
            save_tokenizer(processing_class, self.run)
        timings = {k: self._summary[k] for k in _TIMING_KEYS if k in self._summary}
        self.run.finish(model, metrics=dict(self._eval), timings=timings)
        self.run = None

    def _log_pending(self) -> None:
        if self._pending is None or self.run is None:
            return
        pending, self._pending = self._pending, None
        row = {k: v for k, v in pending.values.items() if v is not None}
        self.run.log(pending.step, **row)


def _numbers(logs: dict[str, Any]) -> dict[str, Any]:
    """The finite numbers of a Trainer log (it also logs strings and NaN placeholders)."""
    out = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value) and key != "loss":
            continue
        out[key] = value
    return out


def _task_of(model: Any) -> str | None:
    """The modelkit task a transformers model class implies (None: not one modelkit knows)."""
    name = type(model).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "language-modeling"
    if name.endswith(("ForSequenceClassification", "ForImageClassification")):
        return "classification"
    return None


def _checkpoint_name(args: Any, step: int) -> str:
    return f"{Path(args.output_dir).name}/checkpoint-{step}"
