"""Every write the built-in trainer makes to its run directory, through :mod:`modelkit.tracking`.

The built-in loop records its run with the same run-writing core as any user's own loop
(:func:`modelkit.tracking.start_run`): config.json with the model's reference, run.json,
metrics.jsonl, checkpoints and weights, written in a staging directory and published by
``finish`` (see the tracking module for the transaction and the lock). Under DDP only rank 0
writes: a :class:`RunWriter` with no run (other ranks) does nothing, so the loop never asks
which rank it is before writing. Repro's state dumps (``dump_dir``) are plain checkpoint files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelkit.runs import RunDir
from modelkit.training.checkpoint import save_checkpoint

BEST_WEIGHTS = "best.safetensors"


def live_dir(path: Path | str) -> RunDir:
    """Where a run's files are now: its staging directory while unfinished, else ``path``."""
    import os

    from modelkit.tracking import staging_path

    path = Path(path)
    staging = staging_path(Path(os.path.abspath(path)))
    return RunDir(staging if staging.is_dir() else path)


class RunWriter:
    """The run of one training process: a :class:`modelkit.tracking.Run` on rank 0, else None."""

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
        from modelkit.models.reference import reference_for_name
        from modelkit.tracking import start_run

        cfg = s.config
        run = start_run(
            out,
            train_config=cfg.to_dict(),
            trainer="modelkit",
            name=cfg.model,
            reference=reference_for_name(cfg.model, project=project, kwargs=cfg.model_kwargs),
            data=s.data,
            determinism=s.determinism,
            device=s.device,
            fingerprint_every=fingerprint_every,
            overwrite=overwrite,
            resume=resume,
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
        return cls(run)

    @property
    def path(self) -> Path | None:
        """Where the finished run will be (None on ranks > 0)."""
        return None if self.run is None else self.run.path

    # ---- during training ----------------------------------------------------------------
    def log(self, row: dict[str, Any]) -> None:
        """A metrics.jsonl row: ``{"kind": "step" | "epoch", ...}``."""
        if self.run is None:
            return
        fields = {k: v for k, v in row.items() if k not in ("kind", "step", "epoch")}
        if row["kind"] == "epoch":
            self.run.log_epoch(row["epoch"], step=row["step"], **fields)
        else:
            self.run.log(row["step"], epoch=row["epoch"], **fields)

    def fingerprint(self, step: int, model: Any, loss: Any, *, epoch: int) -> None:
        """The state fingerprint of ``model`` (and the step's loss) after ``step``."""
        if self.run is not None:
            self.run.fingerprint(step, model, loss, epoch=epoch)

    def checkpoint(self, payload: dict[str, Any], *, keep: int) -> Path | None:
        """The run's checkpoint (see :func:`modelkit.training.state.checkpoint_payload`).

        The run captures this process's RNG states and the scheduler itself; the rest of the
        payload goes in as the loop's own tensors and objects."""
        if self.run is None:
            return None
        extra = {k: v for k, v in payload["extra_tensors"].items() if not k.startswith("rng.")}
        objects = {k: v for k, v in payload["objects"].items() if k not in ("rng", "scheduler")}
        return self.run.checkpoint(
            payload["model"],
            payload["optimizer"],
            payload["scheduler"],
            step=payload["step"],
            state=payload["state"],
            extra_tensors=extra,
            objects=objects,
            keep=keep,
        )

    def dump(self, directory: Path, payload: dict[str, Any]) -> Path | None:
        """A full state checkpoint outside the run (``modelkit repro`` compares them)."""
        if self.run is None:
            return None
        kwargs = {k: v for k, v in payload.items() if k != "scheduler"}
        return save_checkpoint(directory, keep=10**9, **kwargs)

    def best_weights(self, model: Any, *, model_name: str) -> None:
        """Keep the best epoch's weights (``keep_best``)."""
        from modelkit.models.weights import save_weights

        if self.run is not None:
            meta = {"format": "pt", "modelkit.model": model_name}
            save_weights(model, self.run.dir.path / BEST_WEIGHTS, metadata=meta)

    # ---- how a run ends -----------------------------------------------------------------
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
        weights: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Final weights and the complete (or ``stopped``: a repro prefix) record; publish.

        ``weights``: what to save instead of ``trainer.model`` (a sharded model's gathered
        state); ``extra``: more run.json fields."""
        from modelkit.io import sha256_file

        run, cfg, st, task = self.run, trainer.config, trainer.state, trainer.task
        run.fingerprint_every = 0  # the loop fingerprints its last step itself
        extra = {
            **(extra or {}),
            **throughput(task, trainer.data, samples=st.samples, seconds=st.train_time),
        }
        metrics: dict[str, Any] = {}
        if not stopped:
            # the last step always ends an epoch and is checkpointed: its rows are on disk
            epochs = [r for r in run.dir.read_metrics() if r.get("kind") == "epoch"]
            held_out = (
                task.epoch_row(trainer.last_eval)
                if trainer.last_eval
                else {k: v for k, v in epochs[-1].items() if k.startswith("test_")}
            )
            metrics = {
                **held_out,
                "train_loss": epochs[-1]["train_loss"] if epochs else st.last_train_loss,
            }
        if cfg.keep_best and st.best_value is not None:
            extra["best"] = {
                "metric": cfg.keep_best,
                "value": st.best_value,
                "epoch": st.best_epoch,
                "step": st.best_step,
                "weights": BEST_WEIGHTS,
                "weights_sha256": sha256_file(run.dir.path / BEST_WEIGHTS),
            }
        timings = {"data_load_s": round(load_s, 4), "train_s": round(st.train_time, 4)}
        record = run.finish(
            trainer.model if weights is None else weights,
            metrics=metrics,
            timings=timings,
            extra=extra,
            max_shard_size=cfg.max_shard_size,
        )
        if stopped:  # a repro prefix: published like a run, recorded as what it is
            record.update(status="stopped", stopped_at_step=st.step, steps=st.step)
            RunDir(run.path).write_record(record)
        return record


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
