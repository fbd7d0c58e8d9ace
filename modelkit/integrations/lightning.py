"""``ModelkitCallback`` for Lightning: a ``Trainer.fit`` recorded as a modelkit run.

::

    from modelkit.integrations.lightning import ModelkitCallback

    trainer = L.Trainer(max_epochs=3, callbacks=[ModelkitCallback("runs/exp")])
    trainer.fit(model, train_loader)            # or trainer.fit(..., ckpt_path=...) after a kill

The run directory is the one :func:`modelkit.start_run` writes (``MODELKIT_RUN_DIR`` replaces
``path``): the module's hyperparameters (``save_hyperparameters()``) as config and as the
rebuild reference's kwargs (``LitModule(**hparams)`` + ``load_state_dict``), the data
fingerprint, one metrics row per optimizer step (the training step's loss), validation metrics
per epoch, state fingerprints, and the weights at the end.

Seeding: ``MODELKIT_SEED`` replaces the seed (``lightning.seed_everything``) and
``MODELKIT_DETERMINISTIC=1`` turns on deterministic algorithms in ``setup``, before the
training DataLoader draws its shuffling seed; with ``MODELKIT_RUN_DIR`` set, ``ModelCheckpoint``
writes to ``<run dir>.ckpts`` so side-by-side runs keep their checkpoints apart. Resuming: Lightning's checkpoints hold no RNG
state; the callback adds every RNG state to each checkpoint (``checkpoint["modelkit"]``) and
restores it in ``on_fit_start`` of ``fit(ckpt_path=...)``, before the DataLoader is iterated,
so a resume from an end-of-epoch checkpoint is bitwise identical to an uninterrupted run. A
checkpoint taken mid-epoch with a DataLoader that has no ``state_dict`` cannot restart at its
batch (Lightning restarts the epoch's data): the run records ``"bitwise": false`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - the older package name
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as exc:
        from modelkit.errors import BadInputError

        raise BadInputError(
            f"modelkit.integrations.lightning needs lightning: {exc}",
            hint="pip install 'modelkit[lightning]'",
        ) from None

from modelkit.integrations._common import (
    clean_config,
    determinism_block,
    env_deterministic,
    env_seed,
)
from modelkit.runs.seeding import seeded_by
from modelkit.runs.typed import read_typed

__all__ = ["ModelkitCallback"]

KEY = "modelkit"  # the callback's entry in a Lightning checkpoint
OUTPUT_LOSS = "loss"  # where a training_step's output dict holds the loss (Lightning's rule)


@dataclass(frozen=True)
class _CallbackState:
    """What the callback saves in a Lightning checkpoint (:meth:`ModelkitCallback.on_save_checkpoint`):
    every RNG state, whether the epoch had ended, the step."""

    rng_tensors: Any = None
    rng_meta: Any = None
    epoch_done: bool = False
    step: int | None = None

    @classmethod
    def read(cls, checkpoint: dict[str, Any]) -> _CallbackState | None:
        """The callback's entry of ``checkpoint`` (None: written without the callback)."""
        entry = checkpoint.get(KEY)
        if entry is None:
            return None
        return read_typed(cls, entry, source="the Lightning checkpoint", where=KEY)


class ModelkitCallback(Callback):
    """Record ``trainer.fit`` as a modelkit run at ``path`` (see the module docstring).

    ``data``: what to fingerprint (default: the training DataLoader's dataset); ``overwrite``:
    replace a finished run at ``path``; ``fingerprint_every``: K for the state fingerprint;
    ``reference``/``model_kwargs``/``name``/``task``/``eval_transform``: as for :func:`modelkit.start_run`.
    """

    def __init__(
        self,
        path: str | Path = "runs/exp",
        *,
        data: Any = None,
        overwrite: bool = False,
        fingerprint_every: int = 25,
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
        self.reference, self.model_kwargs, self.name = reference, model_kwargs, name
        self.run: Any = None
        self._restored: _CallbackState | None = None  # what the callback saved in ckpt_path
        self._seed: int | None = None
        self._last_step = -1
        self._eval: dict[str, Any] = {}

    @property
    def state_key(self) -> str:
        return f"ModelkitCallback[{self.path}]"

    # ---- seeding and RNG: before the training DataLoader draws its seed -----------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """``MODELKIT_SEED`` / ``MODELKIT_DETERMINISTIC`` reach Lightning's seeding."""
        import os

        import torch

        if stage != "fit":
            return
        seed = env_seed()
        if seed is not None:
            from lightning.fabric.utilities.seed import seed_everything

            seed_everything(seed, workers=True, verbose=False)
        if env_deterministic():
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        from modelkit.tracking import RUN_DIR_ENV

        if os.environ.get(RUN_DIR_ENV):  # side-by-side runs (repro) keep their checkpoints apart
            for cb in trainer.checkpoint_callbacks:
                cb.dirpath = os.path.abspath(os.environ[RUN_DIR_ENV]) + ".ckpts"
        global_seed = os.environ.get("PL_GLOBAL_SEED")
        self._seed = seed if seed is not None else (int(global_seed) if global_seed else None)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        """Every RNG state (Lightning saves none) and whether the epoch had ended."""
        from modelkit.training.determinism import capture_rng

        tensors, meta = capture_rng()
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        checkpoint[KEY] = {
            "rng_tensors": tensors,
            "rng_meta": meta,
            "epoch_done": done >= trainer.num_training_batches,
            "step": int(trainer.global_step),
        }  # read back by _CallbackState
        if self.run is not None:
            self.run.flush()

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        self._restored = _CallbackState.read(checkpoint)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Restore the checkpoint's RNG states (before the DataLoader is iterated)."""
        if self._restored is not None:
            from modelkit.training.determinism import restore_rng

            restore_rng(self._restored.rng_tensors, self._restored.rng_meta)

    # ---- the run ---------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Open the run (continue it when ``fit`` resumed from a checkpoint)."""
        import modelkit

        loader = trainer.train_dataloader
        data = self.data if self.data is not None else getattr(loader, "dataset", None)
        step = int(trainer.global_step)
        # the framework seeded itself: its determinism is recorded, nothing is re-seeded
        with seeded_by(determinism_block(self._seed, seeded_by="lightning (seed_everything)")):
            self.run = modelkit.start_run(
                self.path,
                config=clean_config(dict(getattr(pl_module, "hparams", {}) or {})),
                model=pl_module,
                data=data,
                reference=self.reference,
                model_kwargs=self.model_kwargs,
                name=self.name,
                task=self.task,
                eval_transform=self.eval_transform,
                overwrite=self.overwrite,
                resume=step > 0,
                fingerprint_every=self.fingerprint_every,
            )
        self._last_step = step
        if step > 0:
            restored = self._restored
            bitwise = restored is not None and restored.epoch_done
            why = None
            if not bitwise:
                why = (
                    "the checkpoint was taken mid-epoch and the DataLoader cannot restart "
                    "at a batch (no state_dict)"
                    if restored is not None
                    else "the checkpoint was written without ModelkitCallback (no RNG states)"
                )
            self.run.resume_at(
                step, checkpoint=_name(trainer.ckpt_path), bitwise=bitwise, why_not_bitwise=why
            )

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """One row per optimizer step: its loss (and the metrics logged with prog_bar/on_step)."""
        step = int(trainer.global_step)
        if self.run is None or step == self._last_step:  # accumulating gradients
            return
        self._last_step = step
        loss = outputs.get(OUTPUT_LOSS) if isinstance(outputs, dict) else outputs
        row = {"epoch": int(trainer.current_epoch)}
        if loss is not None:
            row["loss"] = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        self.run.log(step, **row)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.run is None or trainer.sanity_checking:
            return
        metrics = _numbers(trainer.callback_metrics)
        if metrics:
            self._eval.update(metrics)
            step = max(int(trainer.global_step), 0)
            self.run.log_epoch(int(trainer.current_epoch), step=step, **metrics)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Weights and the last validation metrics; the run is published."""
        if self.run is None:
            return
        self.run.finish(pl_module, metrics=dict(self._eval))
        self.run = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """A failed fit leaves a failed run (kept for ``ckpt_path`` resume), never a running one."""
        if self.run is not None:
            self.run.fail(exception)
            self.run = None


def _numbers(metrics: Any) -> dict[str, float]:
    out = {}
    for key, value in dict(metrics).items():
        if hasattr(value, "numel") and value.numel() == 1:
            value = float(value.detach())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key)] = float(value)
    return out


def _name(ckpt_path: Any) -> str | None:
    return Path(ckpt_path).name if ckpt_path else None
