"""The public API for recording a run from your own training loop.

::

    import modelkit

    modelkit.seed_everything(args.seed, deterministic=True)   # optional
    model = Net()
    with modelkit.start_run("runs/exp", config=vars(args), model=model, data=train_ds) as run:
        for step, (x, y) in enumerate(loader):
            ...
            run.log(step, loss=loss.item())        # metrics.jsonl; a state fingerprint every K steps
        run.finish(model, metrics={"accuracy": acc})  # model.safetensors + run.json, then published

Without re-indenting a script, ``run = modelkit.start_run(...)`` ... ``run.finish(model)`` works
too: a run neither finished nor failed when the script exits is recorded as failed.

The run directory is a transaction (:mod:`modelkit.runs`): written in a staging sibling
``<parent>/.<name>.partial/`` under a lock and renamed into place by :meth:`Run.finish`; an
existing complete run is replaced (``overwrite=True``) only at that moment. ``resume=True``
continues the staging directory of a killed or failed run, and :meth:`Run.resume` restores
the newest verified checkpoint written by :meth:`Run.checkpoint` (safetensors + JSON, never
pickle). Rows recorded before a resume are kept unless the loop logs their steps again.

``MODELKIT_RUN_DIR`` replaces the path given to :func:`start_run`; ``MODELKIT_SEED`` replaces
the seed; ``MODELKIT_DETERMINISTIC=1`` turns on deterministic algorithms; ``MODELKIT_PERTURB=
STEP:PARAM`` is ``modelkit repro``'s test hook (:mod:`modelkit.runs.perturb`). Arguments are
checked at entry: a wrong one is :class:`~modelkit.errors.InvalidArgument` (exit 2).

Importing this module does not import torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from modelkit.data.fingerprint import DATA_SAMPLE_ITEMS, data_summary
from modelkit.errors import (
    BadInputError,
    InvalidArgument,
    ModelkitError,
    RunDirError,
    TrainingError,
)
from modelkit.repro.hooks import RunHooks
from modelkit.runs import values as V
from modelkit.runs.artifacts import artifact_name
from modelkit.runs.exits import install_error_hook, watch
from modelkit.runs.opening import RunSpec, config_digest, open_session
from modelkit.runs.perturb import PERTURB_ENV, env_perturb, parse_perturb, unwrap
from modelkit.runs.seeding import DETERMINISTIC_ENV, SEED_ENV, seed_everything
from modelkit.runs.session import RunSession
from modelkit.runs.transaction import lock_path, staging_path

__all__ = [
    "DATA_SAMPLE_ITEMS",
    "DETERMINISTIC_ENV",
    "PERTURB_ENV",
    "RUN_DIR_ENV",
    "SEED_ENV",
    "Run",
    "config_digest",
    "data_summary",
    "lock_path",
    "seed_everything",
    "staging_path",
    "start_run",
]

RUN_DIR_ENV = "MODELKIT_RUN_DIR"
LOSS = "loss"  # the logged metric run.log checks: a non-finite one stops the run


def start_run(
    path: Path | str,
    *,
    config: Any = None,
    model: Any = None,
    data: Any = None,
    seed: int | None = None,
    deterministic: bool | None = None,
    model_kwargs: dict[str, Any] | None = None,
    reference: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    fingerprint_every: int = 25,
    name: str | None = None,
    task: str | None = None,
    eval_transform: Any = None,
) -> Run:
    """Open a run directory for writing (a transaction, see the module docstring).

    ``path`` (``$MODELKIT_RUN_DIR`` wins): the finished run's directory. ``config``: your
    hyperparameters (dict, argparse Namespace or dataclass; config.json, ``config_sha256``).
    ``model``: the model (reference, parameter count, fingerprints). ``data``: what it trains
    on (:func:`data_summary`). ``seed``/``deterministic``: seed now, unless
    :func:`seed_everything` already did. ``model_kwargs``/``reference``: how to rebuild the
    model (default: from the instance); ``name``: its name (default: the reference).
    ``fingerprint_every``: K for the state fingerprint of :meth:`Run.log` (0: never).
    ``task``: a :mod:`modelkit.tasks` name (default classification). ``eval_transform``: the
    input preprocessing before ``model(x)`` at evaluation (``package.module:function`` or
    ``"model.ATTR"``), so ``modelkit eval`` evaluates what the script did.
    """
    install_error_hook()  # the first modelkit call of a script: its errors end it as a verb
    V.check_start_args(path, model, seed, fingerprint_every, name, overwrite, resume)
    hooks = RunHooks.from_env()  # modelkit repro's env hooks
    if hooks is not None and hooks.fingerprint_every is not None:
        fingerprint_every = hooks.fingerprint_every
    ref = V.resolve_reference(reference, model, model_kwargs)
    perturb = parse_perturb(env_perturb(), model)
    spec = RunSpec(
        config=V.config_dict(config),
        model=model,
        data=data,
        seed=seed,
        deterministic=deterministic,
        reference=ref,
        name=name if name is not None else (ref.ref if ref is not None else None),
        fingerprint_every=fingerprint_every,
        record_extra={
            **V.task_fields(task, eval_transform),
            **({"perturbed": perturb.spec} if perturb else {}),
        },
        hooks=hooks,
    )
    target = os.environ.get(RUN_DIR_ENV) or path
    session = open_session(target, spec, overwrite=overwrite, resume=resume)
    watch(session)
    return Run(session, perturb=perturb)


class Run:
    """One run being written (a context manager: an exception inside calls :meth:`fail`).

    ``path`` is where the finished run will be; ``dir`` is where files are written now (the
    staging directory, until :meth:`finish` moves it to ``path``).
    """

    def __init__(self, session: RunSession, *, perturb: Any = None) -> None:
        self._session = session
        self._perturb = perturb
        self._last_logged: int | None = None  # the newest step given to log()
        self._last_epoch_step: int | None = None

    @property
    def path(self) -> Path:
        return self._session.path

    @property
    def dir(self) -> Any:
        return self._session.dir

    @property
    def record(self) -> dict[str, Any]:
        """The run.json being written (read it typed: ``modelkit.runs.read_run_record``)."""
        return self._session.record

    @property
    def model(self) -> Any:
        return self._session.model

    @property
    def fingerprint_every(self) -> int:
        return self._session.fingerprint_every

    # ---- logging -----------------------------------------------------------------------
    def log(self, step: int, **metrics: Any) -> None:
        """Add a ``{"kind": "step", "step": step, **metrics}`` row to metrics.jsonl.

        Steps never go backwards. Every ``fingerprint_every`` steps the model's state
        fingerprint is recorded too. A non-finite ``loss`` stops the run (TrainingError);
        other non-finite values are stored as documented in :mod:`modelkit.runs.record`.
        """
        self._session.check_open()
        step = V.checked_step(step)
        self._forward_only(step, self._last_logged, "run.log")
        values = V.checked_metrics(metrics)
        loss = V.loss_value(values.get(LOSS), step)
        self._session.add_row({"kind": "step", "step": step, **values}, loss=loss)
        self._last_logged = step
        if loss is not None and not math.isfinite(loss):
            raise TrainingError(
                f"loss became {loss} at step {step}",
                hint="lower the learning rate or check the data",
            )
        if self._perturb is not None:
            self._perturb.apply(step)
        hooks, every = self._session.hooks, self.fingerprint_every
        raw_loss = metrics.get(LOSS)
        if hooks is not None:  # fingerprint when due, state dump (modelkit repro)
            hooks.on_log(self, step, raw_loss)
        elif every and self.model is not None and step % every == 0:
            self.fingerprint(step, loss=raw_loss)

    def log_epoch(self, epoch: int, *, step: int, **metrics: Any) -> None:
        """Add a ``{"kind": "epoch", "epoch": epoch, "step": step, **metrics}`` row."""
        self._session.check_open()
        epoch = V.checked_step(epoch, name="epoch")
        step = V.checked_step(step)
        self._forward_only(step, self._last_epoch_step, "run.log_epoch")
        row = {"kind": "epoch", "epoch": epoch, "step": step, **V.checked_metrics(metrics)}
        self._session.add_row(row)
        self._last_epoch_step = step

    def _forward_only(self, step: int, last: int | None, what: str) -> None:
        if last is not None and step < last:
            raise InvalidArgument(
                "step",
                step,
                f"an integer >= {last} (the last step given to {what})",
                hint="steps never go backwards; pass a global step counter",
            )

    def fingerprint(
        self, step: int, model: Any = None, loss: Any = None, *, epoch: int | None = None
    ) -> str:
        """Record (and return) the sha256 of every parameter and buffer plus the loss bits.

        ``loss`` may be a tensor or a float (``loss.item()`` of a float32 loss hashes to the
        same bits as the tensor).
        """
        self._session.check_open()
        step = V.checked_step(step)
        model = V.checked_module(model) if model is not None else self.model
        if model is None:
            raise BadInputError(
                "run.fingerprint needs the model", hint="pass model= to start_run or fingerprint"
            )
        if loss is not None:
            loss = loss if hasattr(loss, "detach") else float(V.scalar("loss", loss))
        return self._session.fingerprint(step, model, loss, epoch=epoch)

    # ---- checkpoints -------------------------------------------------------------------
    def checkpoint(
        self,
        model: Any,
        optimizer: Any = None,
        scheduler: Any = None,
        *,
        step: int,
        state: dict[str, Any] | None = None,
        extra_tensors: dict[str, Any] | None = None,
        objects: dict[str, Any] | None = None,
        keep: int = 2,
    ) -> Path:
        """Atomically save everything to continue bitwise after ``step``; returns the file.

        Model, optimizer, scheduler, every RNG state (Python, NumPy, torch CPU and CUDA), the
        metrics so far, ``state`` (your JSON-able loop position, e.g. epoch/batch),
        ``extra_tensors`` and ``objects`` (JSON-able ``state_dict()``s, e.g. a GradScaler's).
        Log the step before checkpointing it; the newest ``keep`` checkpoints are kept.
        """
        from modelkit.runs.checkpoint import Checkpoint

        self._session.check_open()
        step = V.checked_step(step)
        keep = V.checked_int(keep, name="keep", minimum=1, hint="keep=2 (the default)")
        model = unwrap(V.checked_module(model))
        if self._session.hooks is not None:
            self._session.hooks.optimizer = optimizer  # dumped with the model (repro)
        ckpt = Checkpoint.capture(
            step=step,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            state=state,
            tensors=extra_tensors,
            objects=objects,
        )
        return self._session.save_checkpoint(ckpt, keep=keep)

    def resume(
        self, model: Any, optimizer: Any = None, scheduler: Any = None, *, fallback: bool = False
    ) -> dict[str, Any] | None:
        """Restore the newest verified checkpoint into the live objects (and every RNG).

        Returns ``{"step", "state", "extra_tensors", "objects", "checkpoint"}`` — continue
        with step ``step + 1`` — or None when there is nothing to resume (start from 0). The
        checkpoint must fit the model and optimizer (checked before loading). Metrics rows
        after the checkpoint are cut, so the finished run equals an uninterrupted one. A
        corrupt newest checkpoint is an error unless ``fallback`` (then the previous good one).
        """
        model = unwrap(V.checked_module(model))
        ckpt, rejected = self._session.latest_checkpoint(fallback=fallback)
        if ckpt is not None:
            ckpt.restore(model, optimizer, scheduler)
        self._session.resumed_from(ckpt, rejected)
        if ckpt is None:
            return None
        self._last_logged = self._session.last_step
        return {
            "step": ckpt.step,
            "state": ckpt.state,
            "extra_tensors": ckpt.tensors,
            "objects": ckpt.objects,
            "checkpoint": str(ckpt.path),
        }

    # ---- a framework's own checkpoints ------------------------------------------------
    def flush(self) -> None:
        """Append the buffered metrics rows now (a framework's checkpoint was just written)."""
        self._session.check_open()
        self._session.flush()

    def resume_at(
        self,
        step: int,
        *,
        checkpoint: str | None = None,
        bitwise: bool | None = None,
        why_not_bitwise: str | None = None,
    ) -> None:
        """Continue after ``step``, restored by a framework's own checkpoint (``checkpoint``):
        the rows a killed attempt logged after it are dropped, the earlier ones kept. A
        framework says whether the continuation is ``bitwise`` (and if not, why not)."""
        self._session.check_open()
        step = V.checked_step(step)
        notes = {"bitwise": bitwise, "why_not_bitwise": why_not_bitwise}
        notes = {k: v for k, v in notes.items() if v is not None}
        self._session.resume_at(step, checkpoint=checkpoint, notes=notes)
        self._last_logged = self._session.last_step

    # ---- artifacts and the end ---------------------------------------------------------
    def add_artifact(self, path: Path | str, *, name: str | None = None) -> Path:
        """Copy the regular file ``path`` into the run (``artifacts/<name>``, default its own
        name) and record it; a release carries it. Returns where it lies in the run."""
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgument("path", path, "a file path", hint="run.add_artifact('vocab.txt')")
        source = Path(path)
        artifact = self._session.add_artifact(source, artifact_name(source, name))
        return self.path / artifact.relpath

    def finish(
        self,
        model: Any,
        *,
        metrics: dict[str, Any] | None = None,
        timings: dict[str, Any] | None = None,
        max_shard_size: int | str | None = None,
    ) -> dict[str, Any]:
        """Write the weights and run.json (status complete), then publish the run.

        ``metrics``: the final metrics; ``timings``: your own measured seconds (added to the
        recorded ``train_s``/``checkpoint_s``). The weights are ``model.safetensors``, or
        shards + index above ``max_shard_size`` (default the Hub's ``"5GB"``). The staging
        directory is renamed to ``path`` (replacing the old run if ``overwrite``); returns
        the record.
        """
        self._session.check_open()
        model = V.checked_module(model, hint="pass the trained model: run.finish(model)")
        if metrics is not None and not isinstance(metrics, dict):
            raise InvalidArgument(
                "metrics", metrics, "a dict of name -> number", hint="metrics={'accuracy': acc}"
            )
        if timings is not None and not isinstance(timings, dict):
            raise InvalidArgument("timings", timings, "a dict of name -> seconds", hint="{}")
        return self._session.finish(
            model,
            metrics=V.checked_metrics(metrics or {}),
            timings=V.checked_metrics(timings or {}),
            max_shard_size=max_shard_size,
        )

    def failure_note(self) -> str:
        """What a failure leaves behind, for the error's hint."""
        return self._session.failure_note()

    def fail(self, error: BaseException | str) -> None:
        """Record the failure (status failed) and release the lock; the run at ``path`` (if
        any) is untouched and the staging directory stays for resume."""
        self._session.fail(error)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        session = self._session
        if exc is None:
            if not session.closed:
                session.fail("the with-block ended without run.finish(model)")
                raise RunDirError(
                    f"the run {self.path} ended without run.finish(model)",
                    hint="call run.finish(model, metrics=...) at the end of training; "
                    + session.failure_note(),
                )
            return False
        if not session.closed:
            note = session.failure_note()
            session.fail(exc)
            if isinstance(exc, ModelkitError):
                exc.hint = f"{exc.hint}; {note}" if exc.hint else note
            else:
                exc.add_note(f"modelkit: {note}")
        return False
