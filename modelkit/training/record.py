"""Every write the built-in trainer makes to its run directory, through the run core.

The built-in loop records its run with the same core as any user's own loop
(:func:`modelkit.runs.open_session`): config.json with the model's reference, run.json,
metrics.jsonl, checkpoints and weights, written in a staging directory and published by
``finish`` (see :mod:`modelkit.runs.transaction`). Under DDP only rank 0 writes: a
:class:`RunWriter` with no session (other ranks) does nothing, so the loop never asks which
rank it is before writing. Repro's state dumps (``dump_dir``) are plain checkpoint files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelkit.io import sha256_file
from modelkit.models.reference import reference_for_name
from modelkit.runs import RunDir, RunSpec, live_dir, open_session

__all__ = ["BEST_WEIGHTS", "RunWriter", "live_dir", "throughput"]

BEST_WEIGHTS = "best.safetensors"


class RunWriter:
    """The run of one training process: a :class:`~modelkit.runs.session.RunSession` on
    rank 0, else None."""

    def __init__(self, run: Any = None) -> None:
        self.run = run

    @classmethod
    def start(
        cls,
        out: Path | str,
        s: Any,
        *,
        project: Any,
        fingerprint_every: int,
        overwrite: bool = False,
        resume: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> RunWriter:
        """Open (``resume``: reopen) the run at ``out`` for the built-in trainer's setup ``s``."""
        from modelkit.config import recipe

        cfg = s.config
        spec = RunSpec(
            config=cfg.to_dict(),
            config_key="train",
            trainer="modelkit",
            name=cfg.model,
            reference=reference_for_name(cfg.model, project=project, kwargs=cfg.model_kwargs),
            data=s.data,
            determinism=s.determinism,
            device=s.device,
            fingerprint_every=fingerprint_every,
            project_root=getattr(project, "root", None),
            record_extra={
                "task": s.task.name,
                "distributed": s.world.record(),
                "accel": s.accel,
                "recipe": recipe(cfg),
                "num_parameters": sum(p.numel() for p in s.model.parameters()),
                **(extra or {}),
            },
        )
        return cls(open_session(out, spec, overwrite=overwrite, resume=resume))

    @property
    def path(self) -> Path | None:
        """Where the finished run will be (None on ranks > 0)."""
        return None if self.run is None else self.run.path

    # ---- during training ----------------------------------------------------------------
    def log(self, row: dict[str, Any], *, loss: float | None = None) -> None:
        """A metrics.jsonl row: ``{"kind": "step" | "epoch", ...}``; a step row's ``loss``
        is checked (a non-finite one stops the run)."""
        if self.run is not None:
            self.run.add_row(row, loss=loss)

    def fingerprint(self, step: int, model: Any, loss: Any, *, epoch: int) -> None:
        """The state fingerprint of ``model`` (and the step's loss) after ``step``."""
        if self.run is not None:
            self.run.fingerprint(step, model, loss, epoch=epoch)

    def checkpoint(self, ckpt: Any, *, keep: int) -> Path | None:
        """Save the trainer's :class:`~modelkit.runs.Checkpoint` into the run."""
        if self.run is None:
            return None
        return self.run.save_checkpoint(ckpt, keep=keep)

    def dump(self, directory: Path, ckpt: Any) -> Path | None:
        """A full state checkpoint outside the run (``modelkit repro`` compares them)."""
        if self.run is None:
            return None
        return ckpt.save(directory, keep=None)

    def best_weights(self, model: Any, *, model_name: str) -> None:
        """Keep the best epoch's weights (``keep_best``)."""
        from modelkit.models.weights import save_weights

        if self.run is not None:
            meta = {"format": "pt", "modelkit.model": model_name}
            save_weights(model, self.run.dir.path / BEST_WEIGHTS, metadata=meta)

    # ---- how a run ends -----------------------------------------------------------------
    def save_weights(self, source: Any, *, max_shard_size: int | str | None) -> Any:
        """Write the final weights from ``source`` one file at a time (a sharded model's,
        gathered file by file); ``finish(saved=...)`` publishes them. None on ranks > 0."""
        if self.run is None:
            return None
        return self.run.save_weights(source, max_shard_size=max_shard_size)

    def fail(self, error: BaseException | str) -> None:
        """status failed (the staging directory stays, for ``--resume``)."""
        if self.run is not None:
            self.run.fail(error)

    def finish(
        self,
        trainer: Any,
        *,
        load_s: float,
        stopped: bool = False,
        saved: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Final weights and the complete (or ``stopped``: a repro prefix) record; publish.

        ``saved``: the weights :meth:`save_weights` already wrote (a sharded model's);
        ``extra``: more run.json fields."""
        run, cfg, st, task = self.run, trainer.config, trainer.state, trainer.task
        run.fingerprint_every = 0  # the loop fingerprints its last step itself
        extra = {
            **(extra or {}),
            **throughput(task, trainer.data, samples=st.samples, seconds=st.train_time),
        }
        metrics = {} if stopped else _final_metrics(run, trainer)
        if cfg.keep_best and st.best_value is not None:
            extra["best"] = _best(run, cfg, st)
        timings = {"data_load_s": round(load_s, 4), "train_s": round(st.train_time, 4)}
        record = run.finish(
            trainer.model,
            metrics=metrics,
            timings=timings,
            extra=extra,
            max_shard_size=cfg.max_shard_size,
            saved=saved,
        )
        if stopped:  # a repro prefix: published like a run, recorded as what it is
            record.update(status="stopped", stopped_at_step=st.step, steps=st.step)
            RunDir(run.path).write_record(record)
        return record


def _final_metrics(run: Any, trainer: Any) -> dict[str, Any]:
    """The task's held-out metrics of the last evaluation and the last epoch's train loss."""
    # the last step always ends an epoch and is checkpointed: its rows are on disk
    epochs = [r for r in run.dir.metric_rows() if r.kind == "epoch"]
    held_out = (
        trainer.task.epoch_row(trainer.last_eval)
        if trainer.last_eval
        else {k: epochs[-1].value(k) for k in epochs[-1].values if k.startswith("test_")}
    )
    train_loss = epochs[-1].value("train_loss") if epochs else trainer.state.last_train_loss
    return {**held_out, "train_loss": train_loss}


def _best(run: Any, cfg: Any, st: Any) -> dict[str, Any]:

    return {
        "metric": cfg.keep_best,
        "value": st.best_value,
        "epoch": st.best_epoch,
        "step": st.best_step,
        "weights": BEST_WEIGHTS,
        "weights_sha256": sha256_file(run.dir.path / BEST_WEIGHTS),
    }


def throughput(task: Any, data: Any, *, samples: int, seconds: float) -> dict[str, Any]:
    """What a run saw and how fast, in samples and (a task counting tokens) in its unit."""
    out: dict[str, Any] = {
        "samples_seen": samples,
        "samples_per_second": samples / seconds if seconds else 0.0,
    }
    if task.unit != "samples":  # e.g. tokens: every window holds context_length of them
        per_sample = task.units(data.y_train[:1])
        out[f"{task.unit}_seen"] = samples * per_sample
        out[f"{task.unit}_per_second"] = samples * per_sample / seconds if seconds else 0.0
    return out
