"""One run being written: rows, fingerprints, checkpoints, artifacts, and how it ends.

A :class:`RunSession` is opened by :func:`modelkit.runs.opening.open_session` and writes into
the staging directory (``dir``) until :meth:`finish` publishes it to ``path``; :meth:`fail`
records the failure and keeps the staging directory for a resume. It trusts its caller: the
public API (:mod:`modelkit.tracking`) validates a user's arguments before they get here.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelkit.errors import ModelkitError, RunDirError, WriteFailed
from modelkit.io import write_json_atomic
from modelkit.models.reference import reference_for_model
from modelkit.redact import redact
from modelkit.runs import opening as O
from modelkit.runs.artifacts import copy_artifact
from modelkit.runs.documents import read_model_reference
from modelkit.runs.layout import RunDir, now_iso
from modelkit.runs.perturb import unwrap
from modelkit.runs.record import RunRecord, encode_metrics
from modelkit.runs.seeding import env_seed, forget_seeding, run_determinism
from modelkit.runs.transaction import publish_run

if TYPE_CHECKING:
    from modelkit.runs.checkpoint import Checkpoint

_FLUSH_ROWS = 1000  # metrics rows buffered before they are appended (checkpoints flush too)
_FLUSH_S = 30.0  # ... or seconds since the last append


class RunSession:
    """The writer of one run (see the module docstring). ``record`` is the run.json being
    written; ``last_step`` / ``last_loss`` are the newest logged step and loss."""

    def __init__(self, opened: O.Opened, spec: O.RunSpec) -> None:
        spec.config = redact(spec.config)  # secrets never enter a record (nor its digest)
        self.path, self.dir, self.spec = opened.target, RunDir(opened.staging), spec
        self.model = unwrap(spec.model) if spec.model is not None else None
        self.fingerprint_every = spec.fingerprint_every
        self.hooks = spec.hooks  # modelkit.repro.hooks.RunHooks, or None
        self._lock, self._replaces = opened.lock, opened.replaces
        self.ref, self.name = spec.reference, spec.name
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()
        self._t0 = time.perf_counter()
        self._elapsed_before = 0.0  # train seconds of earlier processes (from the checkpoint)
        self._checkpoint_s = 0.0
        self.last_step: int | None = None
        self.last_loss: float | None = None
        self.fingerprinted: set[int] = set()
        self.closed = False
        self.needs_cut = opened.resumed  # rows of a killed attempt, until the loop says where
        digest = O.config_digest(spec.config)
        if opened.resumed:  # seeded in a resumed process too: a resume without a checkpoint
            self.record = self._reopen(digest)  # starts over exactly like a fresh run
            entry = O.resume_entry(
                RunRecord.from_dict(self.record, source=str(self.dir.record)),
                spec,
                path=self.path,
                model=self.model,
                removed=opened.removed,
            )
            self.record.setdefault("resumes", []).append(entry)
        block = spec.determinism or run_determinism(env_seed(spec.seed), spec.deterministic)
        if not opened.resumed:
            self.record = O.base_record(
                spec, digest=digest, determinism=block, model=self.model, ref=self.ref
            )
            self.write_config()
        self.record["status"] = "running"
        self.record.pop("error", None)
        repro = self.hooks.repro_block() if self.hooks is not None else None
        if repro is not None:  # the command `modelkit repro -- CMD` ran
            self.record.setdefault("command", {})["repro"] = repro
        self.dir.write_record(self.record)

    # ---- setup -----------------------------------------------------------------------------
    def _reopen(self, digest: str) -> dict[str, Any]:
        """The staging dir's record, after checking the config is the one it was started with."""
        rec = self.dir.run_record()
        if rec.config_sha256 is not None and rec.config_sha256 != digest:
            old = rec.config if rec.config is not None else self._config_section()
            changed = O.changed_keys(old, self.spec.config) or [
                "(the recorded config is only a digest)"
            ]
            raise RunDirError(
                f"cannot resume {self.path}: the config differs from the one the run started "
                f"with: {', '.join(changed)}",
                hint="resume with the original config, or start a new run "
                "(another directory, or overwrite=True / --overwrite)",
            )
        self._elapsed_before = rec.train_s
        if self.ref is None and rec.reference is not None:
            self.ref = read_model_reference(rec.reference.as_dict(), source=str(self.dir.record))
        return dict(rec.raw)

    def _config_section(self) -> dict[str, Any]:
        try:
            section = self.dir.read_config().get("modelkit", {}).get(self.spec.config_key)
        except RunDirError:
            return {}
        return section if isinstance(section, dict) else {}

    def write_config(self) -> None:
        """config.json: the model's init kwargs + ``modelkit: {model, reference, <key>}``."""
        ref = self.ref
        kwargs = dict(ref.kwargs) if ref is not None else {}
        if ref is not None and ref.transformers_config() is not None:
            kwargs = ref.transformers_config()  # config.json as save_pretrained writes it
        section: dict[str, Any] = {"model": self.name}
        if ref is not None:
            section["reference"] = ref.to_dict()
        section[self.spec.config_key] = self.spec.config
        write_json_atomic(self.dir.config, redact({**kwargs, "modelkit": section}))

    def check_open(self, step: int | None = None) -> None:
        """Refuse a finished run; on the first write after a resume, cut the killed attempt's
        rows from ``step`` on (the loop logs them again); none without a step."""
        if self.closed:
            raise RunDirError(
                f"the run {self.path} is already finished or failed",
                hint="start another run with modelkit.start_run",
            )
        if self.needs_cut and step is not None:
            self.needs_cut = False
            self.dir.keep_metrics_until(step - 1)

    # ---- rows ------------------------------------------------------------------------------
    def add_row(self, row: dict[str, Any], *, loss: float | None = None) -> None:
        """Buffer one metrics.jsonl row (values already checked; NaN/inf encoded here)."""
        step = int(row["step"])
        self.check_open(step)
        self._pending.append(encode_metrics(row))
        if row["kind"] == "step":
            self.last_step = step
            if loss is not None:
                self.last_loss = loss
        else:
            self.last_step = step if self.last_step is None else max(self.last_step, step)
        if len(self._pending) >= _FLUSH_ROWS or time.monotonic() - self._flushed > _FLUSH_S:
            self.flush()

    def fingerprint(self, step: int, model: Any, loss: Any, *, epoch: int | None = None) -> str:
        """Record (and return) the sha256 of every parameter and buffer plus the loss bits."""
        import torch

        from modelkit.runs.fingerprint import step_fingerprint

        self.check_open(step)
        if loss is not None and not isinstance(loss, torch.Tensor):
            loss = torch.tensor(float(loss), dtype=torch.float32)
        sha = step_fingerprint(unwrap(model), loss)
        row: dict[str, Any] = {"kind": "fingerprint", "step": int(step), "sha256": sha}
        row["loss"] = None if loss is None else float(loss.detach())
        if epoch is not None:
            row["epoch"] = int(epoch)
        self._pending.append(encode_metrics(row))
        self.fingerprinted.add(int(step))
        return sha

    def flush(self) -> None:
        """Append the buffered rows to metrics.jsonl."""
        self.dir.append_metrics(self._pending)
        self._pending = []
        self._flushed = time.monotonic()

    def train_s(self) -> float:
        """Training seconds so far, earlier processes included, checkpoint writes excluded."""
        return self._elapsed_before + (time.perf_counter() - self._t0) - self._checkpoint_s

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, ckpt: Checkpoint, *, keep: int) -> Path:
        """Flush the rows, then write ``ckpt`` (with the writer's counters) into checkpoints/."""
        self.check_open(ckpt.step)
        t0 = time.perf_counter()
        self.flush()
        ckpt.run = {
            "train_s": self.train_s(),
            "last_step": self.last_step,
            "last_loss": self.last_loss,
        }
        path = _disk_errors(lambda: ckpt.save(self.dir.checkpoints, keep=keep), self.path)
        self._checkpoint_s += time.perf_counter() - t0
        return path

    def latest_checkpoint(self, *, fallback: bool = False) -> tuple[Checkpoint | None, list]:
        """The newest verified checkpoint of this run (and the rejected ones)."""
        from modelkit.runs.checkpoint import Checkpoint

        if self.closed:
            self.check_open()
        return Checkpoint.latest(self.dir.checkpoints, fallback=fallback)

    def resumed_from(self, ckpt: Checkpoint | None, rejected: list[dict[str, str]]) -> None:
        """After the loop restored ``ckpt`` (None: it starts over): cut the rows after it,
        take its counters and record the resume in run.json."""
        self.needs_cut = False
        self._pending = []
        if ckpt is None:
            self.dir.keep_metrics_until(-1)
            step, name = 0, None
        else:
            step, name = ckpt.step, ckpt.path.name if ckpt.path else None
            self.dir.keep_metrics_until(step)
            info = ckpt.run
            self._elapsed_before = float(info.get("train_s") or 0.0)
            self.last_step, self.last_loss = info.get("last_step"), info.get("last_loss")
        self._t0, self._checkpoint_s = time.perf_counter(), 0.0
        self.fingerprinted = {r.step for r in self.dir.metric_rows() if r.kind == "fingerprint"}
        if ckpt is not None or "resumes" in self.record:  # a fresh run has no resume to note
            resumes = self.record.setdefault("resumes", [{}])
            resumes[-1].update(from_step=step, checkpoint=name, rejected_checkpoints=rejected)
            self.dir.write_record(self.record)

    def resume_at(
        self, step: int, *, checkpoint: str | None = None, notes: dict[str, Any] | None = None
    ) -> None:
        """Continue after ``step``, restored by a framework's own checkpoint (``checkpoint``):
        the rows a killed attempt logged after it are dropped, the earlier ones kept; ``notes``
        are added to the resume's entry (``bitwise``, ``why_not_bitwise``)."""
        self.needs_cut = False
        self.flush()
        self.dir.keep_metrics_until(step)
        rows = self.dir.metric_rows()
        self.fingerprinted = {r.step for r in rows if r.kind == "fingerprint"}
        self.last_step = step if rows else None
        resumes = self.record.setdefault("resumes", [{}])
        resumes[-1].update(from_step=step, checkpoint=checkpoint, rejected_checkpoints=[])
        resumes[-1].update(notes or {})
        self.dir.write_record(self.record)

    # ---- artifacts -------------------------------------------------------------------------
    def add_artifact(self, source: Path, name: str) -> Any:
        """Copy the regular file ``source`` to ``artifacts/<name>`` atomically; recorded."""
        self.check_open()
        artifact = _disk_errors(lambda: copy_artifact(source, self.dir, name), self.path)
        entries = [
            a
            for a in self.record.get("artifacts", [])
            if a != artifact.path and (not isinstance(a, dict) or a.get("name") != name)
        ]
        self.record["artifacts"] = [*entries, artifact.to_dict()]
        self.dir.write_record(self.record)
        return artifact

    # ---- the end ---------------------------------------------------------------------------
    def save_weights(self, source: Any, *, max_shard_size: int | str | None = None) -> Any:
        """Write the final weights now, one file at a time, from ``source`` (``specs()``: the
        state's stand-ins, ``fetch(names)``: those tensors whole; see
        :mod:`modelkit.weights.stream`) into the staging directory; :meth:`finish` then takes
        the returned ``SavedWeights`` as ``saved`` and publishes them with the run."""
        from modelkit.weights import plan_weights, save_streamed_weights

        self.check_open()
        plan = plan_weights(source.specs(), max_shard_size)
        return _disk_errors(
            lambda: save_streamed_weights(plan, source.fetch, self.dir.path), self.path
        )

    def finish(
        self,
        model: Any,
        *,
        metrics: dict[str, Any],
        timings: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        max_shard_size: int | str | None = None,
        saved: Any = None,
    ) -> dict[str, Any]:
        """Weights + run.json (status complete), then publish; returns the record.
        ``saved``: the weights :meth:`save_weights` already wrote (``model`` is then only
        counted, not saved)."""
        from modelkit.weights import save_model_weights

        self.check_open()
        model = unwrap(model)
        if self.ref is None:
            self._adopt_reference(model)
        last = self.last_step
        if self.fingerprint_every and last is not None and last not in self.fingerprinted:
            self.fingerprint(last, model, self.last_loss)
        self.flush()
        if saved is None:
            saved = _disk_errors(
                lambda: save_model_weights(model, self.dir.path, max_shard_size=max_shard_size),
                self.path,
            )
        final = dict(metrics)
        if self.last_loss is not None:
            final.setdefault("train_loss", self.last_loss)
        self.record.update(
            status="complete",
            finished=now_iso(),
            steps=last,
            timings={
                "train_s": round(self.train_s(), 4),
                "checkpoint_s": round(self._checkpoint_s, 4),
                **(timings or {}),
            },
            metrics=encode_metrics(final),
            **saved.record(),
            num_parameters=O.num_parameters(model),
            **(extra or {}),
        )
        _disk_errors(lambda: self.dir.write_record(self.record), self.path)
        if self.hooks is not None:
            self.hooks.on_finish(model, last)
        publish_run(self.dir.path, self.path)
        self.dir = RunDir(self.path)
        self.close()
        return dict(self.record)

    def _adopt_reference(self, model: Any) -> None:

        self.ref = reference_for_model(model)
        if self.name is None:
            self.name = self.ref.ref
        self.record.update(model=self.name, reference=self.ref.to_dict())
        self.write_config()

    def close(self) -> None:
        """Release the lock; the next run in this process is not 'seeded' by this one's seeding."""
        self.closed = True
        self._lock.release()
        forget_seeding()

    def failure_note(self) -> str:
        """What a failure leaves behind, for the error's hint."""
        from modelkit.runs.checkpoint import list_checkpoints

        ckpts = list_checkpoints(self.dir.checkpoints)
        kept = f"the partial run is kept in {self.dir.path}; start_run(..., resume=True) " + (
            f"continues from its checkpoint {ckpts[-1].name}"
            if ckpts
            else "starts it again (it has no checkpoint)"
        )
        if self._replaces:
            return f"the previous run at {self.path} is intact; {kept}"
        return kept

    def fail(self, error: BaseException | str) -> None:
        """Record the failure in the staging run.json (status failed) and release the lock.

        The run at ``path`` (if any) is untouched; the staging directory stays for resume.
        """
        if self.closed:
            return
        from modelkit.runs.checkpoint import list_checkpoints

        if isinstance(error, ModelkitError):
            text = error.message
        elif isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
        else:
            text = str(error)
        try:
            with contextlib.suppress(OSError):
                self.flush()
            ckpts = list_checkpoints(self.dir.checkpoints)
            self.record.update(
                status="failed",
                error=text,
                finished=now_iso(),
                last_good_checkpoint=ckpts[-1].name if ckpts else None,
            )
            with contextlib.suppress(OSError):  # a full disk: the lock still goes
                self.dir.write_record(self.record)
        finally:
            self.close()

    def __del__(self) -> None:  # a session dropped without finish/fail still frees its lock
        lock = getattr(self, "_lock", None)
        if lock is not None and not getattr(self, "closed", True):
            lock.release()


def _disk_errors(write: Any, path: Path) -> Any:
    """Run ``write``; an OSError (a full disk, a read-only file system) becomes one clear
    WriteFailed. Every write underneath is atomic, so nothing half-written is left."""
    try:
        return write()
    except OSError as exc:
        raise WriteFailed(f"the run {path}", exc.strerror or str(exc)) from None
    except Exception as exc:  # safetensors reports a failed write as its own error type
        if type(exc).__name__ != "SafetensorError" or "I/O error" not in str(exc):
            raise
        reason = str(exc).split("I/O error:", 1)[1].split("(os error")[0].strip()
        raise WriteFailed(f"the run {path}", reason) from None
