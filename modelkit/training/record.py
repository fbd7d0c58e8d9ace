"""Every write the built-in trainer makes to its run directory, in one place.

config.json, run.json (the record), metrics.jsonl, checkpoints, best/final weights. Under DDP
only rank 0 writes: a :class:`RunWriter` made with ``enabled=False`` (other ranks) does
nothing, so the loop never asks which rank it is before writing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelkit.runs import RUN_RECORD_VERSION, RunDir, now_iso, open_run, prepare_run_dir
from modelkit.training.checkpoint import list_checkpoints, save_checkpoint

BEST_WEIGHTS = "best.safetensors"


def base_record(s: Any, *, project: Any, fingerprint_every: int) -> dict[str, Any]:
    """The fields of ``run.json`` known once setup is done (``s``: a :class:`Setup`)."""
    from modelkit.config import recipe
    from modelkit.env import environment
    from modelkit.gitinfo import git_info

    return {
        "version": RUN_RECORD_VERSION,
        "started": now_iso(),
        "model": s.config.model,
        "seed": s.config.seed,
        "config_sha256": s.config.digest(),
        "git": git_info(getattr(project, "root", None) or Path.cwd()),
        "env": environment(s.device),
        "determinism": s.determinism,
        "distributed": s.world.record(),
        "accel": s.accel,
        "fingerprint_every": fingerprint_every,
        "data": s.data.summary(),
        "num_parameters": sum(p.numel() for p in s.model.parameters()),
        "recipe": recipe(s.config),
    }


class RunWriter:
    """The run directory of one training run and its record (``run.json``) as written so far."""

    def __init__(self, run: RunDir, *, enabled: bool = True, record: dict | None = None) -> None:
        self.run, self.enabled = run, enabled
        self.record: dict[str, Any] = record or {}

    @classmethod
    def create(
        cls, out: Path | str, *, overwrite: bool, config: Any, record: dict[str, Any]
    ) -> RunWriter:
        """A fresh run directory with config.json and run.json (status running)."""
        from modelkit.io import write_json_atomic
        from modelkit.models.weights import model_config

        run = prepare_run_dir(out, overwrite=overwrite)
        write_json_atomic(
            run.config, model_config(config.model, config.model_kwargs, config.to_dict())
        )
        writer = cls(run, record={"status": "running", **record})
        writer.write()
        return writer

    @classmethod
    def reopen(cls, run_dir: Path | str) -> RunWriter:
        """A killed run's directory, with its record as far as it was written."""
        run = open_run(run_dir, require=("config.json",))
        return cls(run, record=run.read_record() if run.record.is_file() else {})

    def write(self) -> None:
        """(Re)write run.json atomically."""
        if self.enabled:
            self.run.write_record(self.record)

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        """Append rows to metrics.jsonl (fsynced)."""
        if self.enabled:
            self.run.append_metrics(rows)

    def truncate_metrics(self, step: int) -> None:
        """Keep only the metrics rows up to ``step`` (-1: none), atomically."""
        from modelkit.io import write_bytes_atomic

        if not self.enabled or not self.run.metrics.is_file():
            return
        rows = [r for r in self.run.read_metrics() if int(r.get("step", 0)) <= step]
        body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        write_bytes_atomic(self.run.metrics, body.encode())

    def checkpoint(
        self, directory: Path | None = None, *, keep: int, **payload: Any
    ) -> Path | None:
        """Write one checkpoint (see :func:`modelkit.training.state.checkpoint_payload`)."""
        if not self.enabled:
            return None
        return save_checkpoint(directory or self.run.checkpoints, keep=keep, **payload)

    def best_weights(self, model: Any, *, model_name: str) -> None:
        """Keep the best epoch's weights (``keep_best``)."""
        from modelkit.models.weights import save_weights

        if self.enabled:
            meta = {"format": "pt", "modelkit.model": model_name}
            save_weights(model, self.run.path / BEST_WEIGHTS, metadata=meta)

    def last_checkpoint(self) -> str | None:
        """The newest checkpoint's file name (None before the first)."""
        ckpts = list_checkpoints(self.run.checkpoints)
        return ckpts[-1].name if ckpts else None

    # ---- how a run ends -----------------------------------------------------------------
    def fail(self, error: str) -> None:
        """status failed, with the error and the checkpoint a resume would start from."""
        last = self.last_checkpoint()
        self.record.update(
            status="failed", error=error, finished=now_iso(), last_good_checkpoint=last
        )
        self.write()

    def stopped(self, step: int) -> dict[str, Any]:
        """status stopped (``stop_at_step``: a repro prefix)."""
        self.record.update(status="stopped", stopped_at_step=step, finished=now_iso())
        self.write()
        return self.record

    def finish(self, trainer: Any, *, load_s: float) -> dict[str, Any]:
        """Final weights, then the complete record (metrics, timings, weights sha256)."""
        from modelkit.io import sha256_file
        from modelkit.models.weights import save_weights

        run, cfg, st = self.run, trainer.config, trainer.state
        meta = {"format": "pt", "modelkit.model": cfg.model, "modelkit.config_sha256": cfg.digest()}
        save_weights(trainer.model, run.weights, metadata=meta)
        epochs = [r for r in run.read_metrics() if r.get("kind") == "epoch"]
        last = trainer.last_eval or {
            "accuracy": epochs[-1]["test_accuracy"],
            "loss": epochs[-1]["test_loss"],
        }
        self.record.update(
            status="complete",
            finished=now_iso(),
            steps=st.step,
            samples_seen=st.samples,
            timings={"data_load_s": round(load_s, 4), "train_s": round(st.train_time, 4)},
            samples_per_second=st.samples / st.train_time if st.train_time else 0.0,
            metrics={
                "test_accuracy": last["accuracy"],
                "test_loss": last["loss"],
                "train_loss": epochs[-1]["train_loss"] if epochs else st.last_train_loss,
            },
            weights_sha256=sha256_file(run.weights),
        )
        if cfg.keep_best and st.best_value is not None:
            self.record["best"] = {
                "metric": cfg.keep_best,
                "value": st.best_value,
                "epoch": st.best_epoch,
                "step": st.best_step,
                "weights": BEST_WEIGHTS,
                "weights_sha256": sha256_file(run.path / BEST_WEIGHTS),
            }
        self.write()
        return self.record
