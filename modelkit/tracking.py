"""The run-writing core: any training loop (modelkit's own included) writes a run directory here.

::

    import modelkit

    modelkit.seed_everything(args.seed, deterministic=True)   # optional
    model = Net()
    with modelkit.start_run("runs/exp", config=vars(args), model=model, data=train_ds) as run:
        for step, (x, y) in enumerate(loader):
            ...
            run.log(step, loss=loss.item())        # metrics.jsonl; a state fingerprint every K steps
        run.finish(model, metrics={"accuracy": acc})  # model.safetensors + run.json, then published

The run directory (see :mod:`modelkit.runs`) is a transaction:

* it is written in a staging sibling ``<parent>/.<name>.partial/`` and renamed into place by
  :meth:`Run.finish`; an existing complete run is replaced (``overwrite=True``) only at that
  moment, so a run that fails leaves the previous one intact;
* a lock file ``<parent>/.<name>.lock`` (``fcntl.flock``, holding the writer's pid) makes a
  second writer fail at once (exit 2, naming the holder's pid);
* ``resume=True`` continues the staging directory of a killed or failed run (after checking
  that the config is the recorded one) and :meth:`Run.resume` restores the newest verified
  checkpoint written by :meth:`Run.checkpoint`: model, optimizer, scheduler, every RNG state
  and the loop position (safetensors + JSON, never pickle).

``MODELKIT_RUN_DIR`` (:data:`RUN_DIR_ENV`), when set, replaces the path given to
:func:`start_run`: ``modelkit repro -- CMD`` runs an unmodified command into directories of its
choosing. ``MODELKIT_SEED`` (:data:`SEED_ENV`), when set, replaces the seed given to
:func:`seed_everything` / :func:`start_run` (the control run of ``repro``);
``MODELKIT_DETERMINISTIC=1`` turns on deterministic algorithms in both; ``MODELKIT_PERTURB=
STEP:PARAM`` (a test hook for ``repro``'s localisation) moves the first element of parameter
PARAM by one ULP when :meth:`Run.log` is called for step STEP, and is recorded as ``perturbed``.

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from modelkit.data.fingerprint import DATA_SAMPLE_ITEMS, UNKNOWN, data_summary
from modelkit.errors import BadInputError, ModelkitError, RunDirError, TrainingError
from modelkit.io import exit_now, write_bytes_atomic, write_json_atomic
from modelkit.redact import redact
from modelkit.runs import (
    RUN_RECORD_VERSION,
    RunDir,
    RunLock,
    RunRecord,
    check_run_target,
    clean_stale,
    is_run_dir,
    lock_path,
    now_iso,
    publish_run,
    record_status,
    staging_path,
)
from modelkit.weights import save_model_weights

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
SEED_ENV = "MODELKIT_SEED"
DETERMINISTIC_ENV = (
    "MODELKIT_DETERMINISTIC"  # "1": deterministic algorithms whatever the script says
)
PERTURB_ENV = "MODELKIT_PERTURB"  # "STEP:PARAM": a test hook, nudges PARAM by one ULP at STEP
_FLUSH_ROWS = 1000  # metrics rows buffered before they are appended (checkpoints flush too)
_FLUSH_S = 30.0  # ... or seconds since the last append

_seeding: dict[str, Any] | None = None  # the block of the last seed_everything() call


# ---- seeding --------------------------------------------------------------------------------
def seed_everything(
    seed: int, *, deterministic: bool = False, threads: int | None = None
) -> dict[str, Any]:
    """Seed Python, NumPy and torch (CPU and CUDA); optionally deterministic algorithms.

    Returns the block a run records as ``run.json["determinism"]`` (and remembers it, so a
    later :func:`start_run` records it). ``MODELKIT_SEED``, when set, replaces ``seed``.
    ``threads`` fixes torch's intra-op thread count (CPU results depend on it).
    """
    global _seeding
    from modelkit.training.determinism import configure_determinism

    _install_error_hook()  # the first modelkit call of a training script: errors end it as a verb
    seed = _checked_seed(_env_seed(seed))
    deterministic = deterministic or _env_deterministic()
    block = configure_determinism(seed=seed, threads=threads or 0, deterministic=deterministic)
    block.pop("data_order", None)  # modelkit train's data order; a script has its own
    if os.environ.get(SEED_ENV):
        block["seed_from_env"] = SEED_ENV
    _seeding = block
    return dict(block)


def _env_deterministic() -> bool:
    return os.environ.get(DETERMINISTIC_ENV, "") not in ("", "0")


def _env_seed(seed: int | None) -> int | None:
    raw = os.environ.get(SEED_ENV)
    if not raw:
        return seed
    try:
        return int(raw)
    except ValueError:
        raise BadInputError(
            f"{SEED_ENV}={raw!r} is not an integer", hint=f"set {SEED_ENV} to a seed, or unset it"
        ) from None


def _checked_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise BadInputError(
            f"seed must be an integer in [0, 2**63), got {seed!r}", hint="pass seed=0 (or any)"
        )
    return seed


def _current_determinism(seed: int | None) -> dict[str, Any]:
    """What is true now when nothing was seeded through modelkit (the script seeded, or not)."""
    import torch

    from modelkit.training.determinism import determinism_state

    enabled = torch.are_deterministic_algorithms_enabled()
    return {
        **determinism_state(enabled=enabled, seed=seed),
        "seeded": "by the training script (not through modelkit)",
    }


# ---- config ---------------------------------------------------------------------------------
def _config_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict from a dict, an argparse Namespace or a dataclass instance."""
    import dataclasses

    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    elif not isinstance(config, dict) and hasattr(config, "__dict__"):
        config = vars(config)
    if not isinstance(config, dict):
        raise BadInputError(
            f"config must be a dict, an argparse Namespace or a dataclass, "
            f"got {type(config).__name__}",
            hint="pass config=vars(args)",
        )
    try:
        return json.loads(json.dumps(config, sort_keys=True, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"config cannot be stored as JSON: {exc}",
            hint="pass numbers, strings, lists and dicts (paths are stored as strings)",
        ) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-able")


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``config`` (as ``TrainConfig.digest`` computes it)."""
    return hashlib.sha256(
        (json.dumps(config, sort_keys=True, indent=2) + "\n").encode()
    ).hexdigest()


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({_show(a)} -> {_show(b)})")
    return out


_MISSING = object()


def _show(value: Any) -> str:
    return "unset" if value is _MISSING else json.dumps(value)[:40]


# ---- the run ----------------------------------------------------------------------------------
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
    trainer: str = "user",
    train_config: dict[str, Any] | None = None,
    determinism: dict[str, Any] | None = None,
    device: Any = None,
    record_extra: dict[str, Any] | None = None,
    project_root: Path | None = None,
    task: str | None = None,
    eval_transform: Any = None,
) -> Run:
    """Open a run directory for writing (a transaction, see the module docstring).

    ``path`` (replaced by ``$MODELKIT_RUN_DIR`` when set): the finished run's directory.
    ``config``: the user's hyperparameters (dict, argparse Namespace or dataclass) stored in
    config.json (``modelkit.config``); its digest is ``config_sha256``. ``model``: the model
    (its reference, parameter count, state fingerprints). ``data``: what it trains on (see
    :func:`data_summary`). ``seed`` / ``deterministic``: seed everything now, unless
    :func:`seed_everything` already did with that seed. ``model_kwargs`` / ``reference``: how
    to rebuild the model (default: from the instance, see ``reference_for_model``); ``name``:
    the model's name (default: the reference, e.g. ``train:Net``). ``fingerprint_every``: K for the state
    fingerprint written by :meth:`Run.log` every K steps (0: never).

    ``task``: what the model does, a :mod:`modelkit.tasks` name (``"language-modeling"``;
    default ``"classification"``), stated in run.json; ``eval`` and the card follow it.
    ``eval_transform``: the input preprocessing the script applies before ``model(x)`` at
    evaluation (an importable function, ``package.module:function``, or ``"model.ATTR"``: the
    model's own, e.g. a Lightning module's ``normalize``), recorded so ``modelkit eval``
    evaluates the inputs the script did.

    ``trainer``, ``train_config``, ``determinism``, ``device``, ``record_extra`` and
    ``project_root`` are for ``modelkit train``'s own loop (its TrainConfig goes to
    ``modelkit.train`` instead of ``modelkit.config``).
    """
    env_dir = os.environ.get(RUN_DIR_ENV)
    target = Path(os.path.abspath(env_dir or os.fspath(path)))
    if not target.name or target.name in (".", ".."):
        raise RunDirError(f"{path} cannot be a run directory", hint="name a directory: runs/exp")
    if not isinstance(fingerprint_every, int) or fingerprint_every < 0:
        raise BadInputError(
            f"fingerprint_every must be an integer >= 0, got {fingerprint_every!r}",
            hint="25 (the default) or 0 for none",
        )
    _install_error_hook()
    hooks = _repro_hooks(trainer)  # modelkit repro's env hooks (user loops only)
    if hooks is not None and hooks.fingerprint_every is not None:
        fingerprint_every = hooks.fingerprint_every
    record_extra = {**(record_extra or {}), **_task_fields(task, eval_transform)}
    cfg = redact(_config_dict(train_config if train_config is not None else config))
    ref = _resolve_reference(reference, model, model_kwargs)
    if name is None:
        name = ref.ref if ref is not None else None
    # modelkit train applies MODELKIT_PERTURB in its own loop (RunOptions.perturb)
    perturb = _parse_perturb(os.environ.get(PERTURB_ENV), model) if trainer == "user" else None
    check_run_target(target, overwrite=overwrite, resume=resume)  # refuse before writing anything
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = RunLock(lock_path(target), target=target)
    except OSError as exc:
        raise RunDirError(
            f"cannot write next to {target}: {exc.strerror or exc}",
            hint="choose a writable run directory",
        ) from None
    try:
        run = _open(
            target,
            lock=lock,
            cfg=cfg,
            model=model,
            data=data,
            seed=seed,
            deterministic=deterministic,
            ref=ref,
            name=name,
            overwrite=overwrite,
            resume=resume,
            fingerprint_every=fingerprint_every,
            trainer=trainer,
            cfg_key="train" if train_config is not None else "config",
            determinism=determinism,
            device=device,
            record_extra={**(record_extra or {}), **({"perturbed": perturb[0]} if perturb else {})},
            project_root=project_root,
            hooks=hooks,
        )
        run._perturb = perturb
    except BaseException:
        lock.release()
        raise
    return run


def _task_fields(task: str | None, eval_transform: Any) -> dict[str, Any]:
    """run.json's ``task`` (checked against the registry) and ``eval_transform`` reference."""
    from modelkit.tasks import get_task

    out: dict[str, Any] = {}
    if task is not None:
        out["task"] = get_task(task).name
    if eval_transform is not None:
        ref = eval_transform
        if callable(eval_transform):
            module = getattr(eval_transform, "__module__", None)
            name = getattr(eval_transform, "__qualname__", "")
            if not module or module == "__main__" or "<" in name:
                raise BadInputError(
                    f"eval_transform {eval_transform!r} cannot be imported again",
                    hint="define it at the top level of an importable module, "
                    "or pass 'package.module:function'",
                )
            ref = f"{module}:{name}"
        if not isinstance(ref, str) or not (":" in ref or ref.startswith("model.")):
            raise BadInputError(
                f"eval_transform must be a function, 'package.module:function' or "
                f"'model.ATTR' (the model's own), got {ref!r}",
                hint="e.g. eval_transform='my_pkg.data:normalize' or 'model.normalize'",
            )
        out["eval_transform"] = ref
    return out


def _parse_perturb(spec: str | None, model: Any) -> tuple[str, int, Any] | None:
    """``(spec, step, parameter)`` for ``MODELKIT_PERTURB=STEP:PARAM``; None when unset."""
    if not spec:
        return None
    if model is None:
        raise BadInputError(
            f"{PERTURB_ENV}='{spec}' needs the model", hint="pass model= to start_run"
        )
    from modelkit.errors import did_you_mean

    step_s, _, name = spec.partition(":")
    params = dict(_unwrap(model).named_parameters())
    if not step_s.isdigit() or name not in params:
        raise BadInputError(
            f"{PERTURB_ENV}='{spec}' must be STEP:PARAM{did_you_mean(name, params)}",
            hint=f"parameters: {', '.join(params)}",
        )
    return spec, int(step_s), params[name]


def _unwrap(model: Any) -> Any:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile
        if inner is None and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            inner = getattr(model, "module", None)
        if inner is None:
            return model
        model = inner


def _resolve_reference(reference: Any, model: Any, model_kwargs: dict[str, Any] | None) -> Any:
    from modelkit.models.reference import ModelReference, reference_for_model

    model = _unwrap(model) if model is not None else None
    if reference is None:
        return reference_for_model(model, kwargs=model_kwargs) if model is not None else None
    if isinstance(reference, ModelReference):
        return reference
    if isinstance(reference, str):
        from modelkit.models.reference import _provider

        return ModelReference(
            ref=reference, kwargs=dict(model_kwargs or {}), **_provider(reference)
        )
    if isinstance(reference, dict):
        return ModelReference.from_dict(reference, source="start_run(reference=...)")
    raise BadInputError(
        f"reference must be 'module:attr', a dict or a ModelReference, got {type(reference).__name__}",
        hint="pass reference='my_pkg.models:Net' with model_kwargs={...}",
    )


def _open(target: Path, *, lock: RunLock, **kw: Any) -> Run:
    staging = staging_path(target)
    removed = clean_stale(target, staging)
    # re-check under the lock: another writer may have finished in between
    state = check_run_target(target, overwrite=kw["overwrite"], resume=kw["resume"])
    if state == "incomplete" and kw["resume"]:  # an old-style run killed in place: adopt it
        if staging.exists():
            raise RunDirError(
                f"both {target} (unfinished) and {staging} exist; cannot tell which to resume",
                hint=f"remove the one you do not want (rm -r {staging})",
            )
        os.replace(target, staging)
        state = "absent"
    resumed = (
        kw["resume"]
        and staging.is_dir()
        and is_run_dir(staging)
        and record_status(staging) != "complete"  # an old run swapped out, not yet removed
    )
    if staging.exists() and not resumed:
        if (
            any(staging.iterdir())
            and not is_run_dir(staging)
            and not (staging / "checkpoints").is_dir()
        ):
            raise RunDirError(
                f"{staging} exists and is not a modelkit staging directory; refusing to delete it",
                hint="move it away",
            )
        shutil.rmtree(staging)
    try:
        staging.mkdir(exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"cannot create {staging}: {exc.strerror or exc}", hint="choose a writable directory"
        ) from None
    return Run(
        target,
        staging=staging,
        lock=lock,
        replaces=state in ("complete", "incomplete"),
        resumed=resumed,
        removed=removed,
        **{k: v for k, v in kw.items() if k not in ("overwrite", "resume")},
    )


class Run:
    """One run being written. Use as a context manager: an exception inside calls :meth:`fail`.

    ``path`` is where the finished run will be; ``dir`` is where files are written now (the
    staging directory, until :meth:`finish` moves it to ``path``).
    """

    def __init__(
        self,
        path: Path,
        *,
        staging: Path,
        lock: RunLock,
        replaces: bool,
        resumed: bool,
        removed: list[str],
        cfg: dict[str, Any],
        model: Any,
        data: Any,
        seed: int | None,
        deterministic: bool | None,
        ref: Any,
        name: str | None,
        fingerprint_every: int,
        trainer: str,
        cfg_key: str,
        determinism: dict[str, Any] | None,
        device: Any,
        record_extra: dict[str, Any],
        project_root: Path | None,
        hooks: Any = None,
    ) -> None:
        self.path = path
        self._repro = hooks  # modelkit.repro.hooks.RunHooks, or None
        self.dir = RunDir(staging)
        self.model = _unwrap(model) if model is not None else None
        self.fingerprint_every = fingerprint_every
        self._lock = lock
        self._replaces = replaces
        self._cfg, self._cfg_key, self._ref, self._name = cfg, cfg_key, ref, name
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()
        self._t0 = time.perf_counter()
        self._elapsed_before = 0.0  # train seconds of earlier processes (from the checkpoint)
        self._checkpoint_s = 0.0
        self._last_step: int | None = None
        self._last_loss: float | None = None
        self._fingerprinted: set[int] = set()
        self._closed = False
        self._perturb: tuple[str, int, Any] | None = None
        self._needs_reset = resumed  # rows of a killed attempt, until resume() says where
        digest = config_digest(cfg)
        # seeded (and deterministic algorithms set) in a resumed process too: a resume without
        # a checkpoint starts over exactly like a fresh run; one with a checkpoint restores RNGs
        if resumed:
            self.record = self._reopen(digest)
            self._check_resume(data, device, removed)
        block = determinism or self._seed(_env_seed(seed), deterministic)
        if not resumed:
            self.record = self._base_record(
                digest, block, data, device, trainer, project_root, record_extra
            )
            self._write_config()
        self.record["status"] = "running"
        self.record.pop("error", None)
        if self._repro is not None:
            self._repro.on_start(self.record)
        self.dir.write_record(self.record)

    # ---- setup -------------------------------------------------------------------------
    @staticmethod
    def _seed(seed: int | None, deterministic: bool | None) -> dict[str, Any]:
        """Seed now, unless seed_everything() already did with this seed and mode."""
        if _env_deterministic():
            deterministic = True
        done = _seeding
        if seed is not None:
            same_mode = deterministic is None or (
                done is not None and bool(done.get("enabled")) == deterministic
            )
            if done is None or done.get("seed") != seed or not same_mode:
                return seed_everything(seed, deterministic=bool(deterministic))
            return dict(done)
        if done is not None:
            return dict(done)
        if deterministic:
            from modelkit.training.determinism import configure_determinism

            block = configure_determinism(seed=None, threads=0, deterministic=True)
            return block | {"seeded": "by the training script (not through modelkit)"}
        return _current_determinism(None)

    def _base_record(
        self,
        digest: str,
        determinism: dict[str, Any],
        data: Any,
        device: Any,
        trainer: str,
        project_root: Path | None,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        from modelkit.env import environment
        from modelkit.gitinfo import git_info

        model = self.model
        if device is None and model is not None:
            device = next((p.device for p in model.parameters()), None)
        return {
            "version": RUN_RECORD_VERSION,
            "status": "running",
            "started": now_iso(),
            "trainer": trainer,
            "command": redact(
                {
                    "argv": list(sys.argv),
                    "cwd": os.getcwd(),
                    "executable": sys.executable,
                    "orig_argv": list(getattr(sys, "orig_argv", sys.argv)),
                }
            ),
            "model": self._name,
            "reference": self._ref.to_dict() if self._ref is not None else None,
            "seed": determinism.get("seed"),
            "config": self._cfg,
            "config_sha256": digest,
            "git": git_info(project_root or Path.cwd()),
            "env": environment(device),
            "determinism": determinism,
            "data": data_summary(data),
            "fingerprint_every": self.fingerprint_every,
            "num_parameters": _num_parameters(model),
            "timings": {},
            "metrics": {},
            **extra,
        }

    def _reopen(self, digest: str) -> dict[str, Any]:
        """The staging dir's record, after checking the config is the one it was started with."""
        record = RunRecord.from_dict(self.dir.read_record(), source=str(self.dir.record)).raw
        recorded = record.get("config_sha256")
        if recorded is not None and recorded != digest:
            old = record.get("config")
            if not isinstance(old, dict):
                section = self._read_config_section()
                old = section if isinstance(section, dict) else {}
            changed = _changed_keys(old, self._cfg) or ["(the recorded config is only a digest)"]
            raise RunDirError(
                f"cannot resume {self.path}: the config differs from the one the run started "
                f"with: {', '.join(changed)}",
                hint="resume with the original config, or start a new run "
                "(another directory, or overwrite=True / --overwrite)",
            )
        self._elapsed_before = float((record.get("timings") or {}).get("train_s") or 0.0)
        if self._ref is None and isinstance(record.get("reference"), dict):
            from modelkit.models.reference import ModelReference

            self._ref = ModelReference.from_dict(record["reference"], source=str(self.dir.record))
        return record

    def _check_resume(self, data: Any, device: Any, removed: list[str]) -> None:
        """Refuse other data than the run started on; note the environment's differences."""
        from modelkit.env import diff_environments, environment

        recorded = (self.record.get("data") or {}).get("fingerprint", UNKNOWN)
        if data is not None and recorded != UNKNOWN:
            now = data_summary(data)["fingerprint"]
            if now != recorded:
                from modelkit.errors import DataError

                raise DataError(
                    f"cannot resume {self.path}: the data has fingerprint {now}, "
                    f"the run started on {recorded}",
                    hint="resume only on the data the run started with",
                )
        if device is None and self.model is not None:
            device = next((p.device for p in self.model.parameters()), None)
        self.record.setdefault("resumes", []).append(
            {
                "at": now_iso(),
                "removed_temp_files": removed,
                "env_diff": diff_environments(self.record.get("env") or {}, environment(device)),
            }
        )

    def _read_config_section(self) -> Any:
        try:
            return self.dir.read_config().get("modelkit", {}).get(self._cfg_key)
        except RunDirError:
            return None

    def _write_config(self) -> None:
        ref = self._ref
        kwargs = dict(ref.kwargs) if ref is not None else {}
        if ref is not None and ref.transformers_config() is not None:
            kwargs = ref.transformers_config()  # config.json as save_pretrained writes it
        section: dict[str, Any] = {"model": self._name}
        if ref is not None:
            section["reference"] = ref.to_dict()
        section[self._cfg_key] = self._cfg
        write_json_atomic(self.dir.config, redact({**kwargs, "modelkit": section}))

    # ---- logging -----------------------------------------------------------------------
    def _open_check(self) -> None:
        if self._closed:
            raise RunDirError(
                f"the run {self.path} is already finished or failed",
                hint="start another run with modelkit.start_run",
            )
        if self._needs_reset:  # resumed but resume() never called: the loop starts over
            self._needs_reset = False
            self._truncate(-1)

    def log(self, step: int, **metrics: Any) -> None:
        """Add a ``{"kind": "step", "step": step, **metrics}`` row to metrics.jsonl.

        Every ``fingerprint_every`` steps the model's state fingerprint is recorded too. A
        non-finite ``loss`` stops the run (:class:`TrainingError`).
        """
        self._open_check()
        step = _checked_step(step)
        row = {"kind": "step", "step": step, **_jsonable_metrics(metrics)}
        loss = metrics.get("loss")
        if loss is not None:
            try:
                loss_f = float(loss)
            except (TypeError, ValueError):
                raise BadInputError(
                    f"loss must be a number, got {loss!r} at step {step}",
                    hint="log loss=loss.item()",
                ) from None
            if not math.isfinite(loss_f):
                self._pending.append(row)
                raise TrainingError(
                    f"loss became {loss_f} at step {step}",
                    hint="lower the learning rate or check the data",
                )
            self._last_loss = loss_f
        self._pending.append(row)
        self._last_step = step
        if self._perturb is not None and self._perturb[1] == step:
            _nudge(self._perturb[2])
        every = self.fingerprint_every
        if self._repro is not None:  # perturbation, fingerprint, state dump (modelkit repro)
            self._repro.on_log(self, step, loss)
        elif every and self.model is not None and step % every == 0:
            self.fingerprint(step, loss=loss)
        if len(self._pending) >= _FLUSH_ROWS or time.monotonic() - self._flushed > _FLUSH_S:
            self._flush()

    def log_epoch(self, epoch: int, *, step: int, **metrics: Any) -> None:
        """Add a ``{"kind": "epoch", "epoch": epoch, "step": step, **metrics}`` row."""
        self._open_check()
        step = _checked_step(step)
        self._pending.append(
            {"kind": "epoch", "epoch": int(epoch), "step": step, **_jsonable_metrics(metrics)}
        )
        self._last_step = step if self._last_step is None else max(self._last_step, step)

    def fingerprint(
        self, step: int, model: Any = None, loss: Any = None, *, epoch: int | None = None
    ) -> str:
        """Record (and return) the sha256 of every parameter and buffer plus the loss bits.

        ``loss`` may be a tensor or a float (``loss.item()`` of a float32 loss hashes to the
        same bits as the tensor).
        """
        self._open_check()
        import torch

        from modelkit.training.fingerprint import step_fingerprint

        model = _unwrap(model) if model is not None else self.model
        if model is None:
            raise BadInputError(
                "run.fingerprint needs the model", hint="pass model= to start_run or fingerprint"
            )
        if loss is not None and not isinstance(loss, torch.Tensor):
            loss = torch.tensor(float(loss), dtype=torch.float32)
        sha = step_fingerprint(model, loss)
        row: dict[str, Any] = {
            "kind": "fingerprint",
            "step": int(step),
            "sha256": sha,
            "loss": None if loss is None else float(loss.detach()),
        }
        if epoch is not None:
            row["epoch"] = int(epoch)
        self._pending.append(row)
        self._fingerprinted.add(int(step))
        return sha

    def _flush(self) -> None:
        self.dir.append_metrics(self._pending)
        self._pending = []
        self._flushed = time.monotonic()

    def _truncate(self, step: int) -> None:
        """Keep only the metrics rows up to ``step`` (-1: none), atomically."""
        if not self.dir.metrics.is_file():
            return
        rows = [r for r in self.dir.read_metrics() if int(r.get("step", 0)) <= step]
        body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        write_bytes_atomic(self.dir.metrics, body.encode())

    def _train_s(self) -> float:
        return self._elapsed_before + (time.perf_counter() - self._t0) - self._checkpoint_s

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
        self._open_check()
        from modelkit.training.checkpoint import save_checkpoint
        from modelkit.training.determinism import capture_rng

        t0 = time.perf_counter()
        step = _checked_step(step)
        if self._repro is not None:
            self._repro.optimizer = optimizer
        model = _unwrap(model)
        self._flush()
        rng_tensors, rng_meta = capture_rng()
        extra = {**rng_tensors}
        for key, value in (extra_tensors or {}).items():
            extra[f"user.{key}"] = value
        objs: dict[str, Any] = {
            "rng": rng_meta,
            "user": _json_state(objects or {}, what="objects"),
            "run": {
                "train_s": self._train_s(),
                "last_step": self._last_step,
                "last_loss": self._last_loss,
            },
        }
        if scheduler is not None:
            objs["scheduler"] = _json_state(scheduler.state_dict(), what="scheduler state")
        path = save_checkpoint(
            self.dir.checkpoints,
            step=step,
            model=model,
            optimizer=optimizer,
            state=_json_state(state or {}, what="state"),
            extra_tensors=extra,
            objects=objs,
            keep=max(1, int(keep)),
        )
        self._checkpoint_s += time.perf_counter() - t0
        return path

    def resume(
        self, model: Any, optimizer: Any = None, scheduler: Any = None, *, fallback: bool = False
    ) -> dict[str, Any] | None:
        """Restore the newest verified checkpoint into the live objects (and every RNG).

        Returns ``{"step", "state", "extra_tensors", "objects", "checkpoint"}`` — continue
        with step ``step + 1`` — or None when there is nothing to resume (start from 0).
        Metrics rows after the checkpoint are cut, so the finished run equals an uninterrupted
        one. A corrupt newest checkpoint is an error unless ``fallback`` (then the previous
        good one is used).
        """
        from modelkit.training.checkpoint import (
            find_resume_checkpoint,
            split_tensors,
            unflatten_optimizer,
        )
        from modelkit.training.determinism import restore_rng

        if self._closed:
            self._open_check()
        self._needs_reset = False
        path, tensors, meta, rejected = find_resume_checkpoint(
            self.dir.checkpoints, fallback=fallback
        )
        if path is None:
            self._truncate(-1)
            return None
        model_state, optim_tensors, extra = split_tensors(tensors)
        _unwrap(model).load_state_dict(model_state, strict=True)
        if optimizer is not None:
            optimizer.load_state_dict(unflatten_optimizer(optim_tensors, meta["optimizer"]))
        objects = meta.get("objects", {})
        if scheduler is not None:
            if "scheduler" not in objects:
                raise RunDirError(
                    f"checkpoint {path} holds no scheduler state",
                    hint="resume with the objects the run was checkpointed with",
                )
            scheduler.load_state_dict(objects["scheduler"])
        restore_rng({k: v for k, v in extra.items() if k.startswith("rng.")}, objects["rng"])
        step = int(meta["step"])
        info = objects.get("run", {})
        self._elapsed_before = float(info.get("train_s") or 0.0)
        self._t0 = time.perf_counter()
        self._checkpoint_s = 0.0
        self._last_step = info.get("last_step")
        self._last_loss = info.get("last_loss")
        self._pending = []
        self._truncate(step)
        self._fingerprinted = {
            int(r["step"]) for r in self.dir.read_metrics() if r.get("kind") == "fingerprint"
        }
        resumes = self.record.setdefault("resumes", [{}])
        resumes[-1].update(from_step=step, checkpoint=path.name, rejected_checkpoints=rejected)
        self.dir.write_record(self.record)
        return {
            "step": step,
            "state": meta.get("state", {}),
            "extra_tensors": {k[5:]: v for k, v in extra.items() if k.startswith("user.")},
            "objects": objects.get("user", {}),
            "checkpoint": str(path),
        }

    def flush(self) -> None:
        """Append the buffered metrics rows now (a framework's checkpoint was just written)."""
        self._open_check()
        self._flush()

    def resume_at(self, step: int, *, checkpoint: str | None = None) -> None:
        """Continue after ``step``, restored by a framework's own checkpoint (``checkpoint``):
        the rows a killed attempt logged after it are dropped, the earlier ones kept."""
        step = _checked_step(step)
        self._needs_reset = False
        self._flush()
        self._truncate(step)
        rows = self.dir.read_metrics()
        self._fingerprinted = {int(r["step"]) for r in rows if r.get("kind") == "fingerprint"}
        self._last_step = step if rows else None
        resumes = self.record.setdefault("resumes", [{}])
        resumes[-1].update(from_step=step, checkpoint=checkpoint, rejected_checkpoints=[])
        self.dir.write_record(self.record)

    # ---- the end -----------------------------------------------------------------------
    def finish(
        self,
        model: Any,
        *,
        metrics: dict[str, Any] | None = None,
        timings: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        max_shard_size: int | str | None = None,
    ) -> dict[str, Any]:
        """Write the weights and run.json (status complete), then publish the run.

        The weights are ``model.safetensors``, or shards + index above ``max_shard_size``
        (default the Hub's ``"5GB"``; :func:`modelkit.weights.save_model_weights`).

        The staging directory is renamed to ``path`` (replacing the old run if
        ``overwrite``); returns the record. ``timings`` / ``extra`` add or override record
        fields (``modelkit train`` uses them).
        """
        self._open_check()
        model = _unwrap(model)
        if self._ref is None:
            self._ref = _resolve_reference(None, model, None)
            if self._name is None:
                self._name = self._ref.ref
            self.record.update(model=self._name, reference=self._ref.to_dict())
            self._write_config()
        if (
            self.fingerprint_every
            and self._last_step is not None
            and self._last_step not in self._fingerprinted
        ):
            self.fingerprint(self._last_step, model, self._last_loss)
        self._flush()
        saved = save_model_weights(model, self.dir.path, max_shard_size=max_shard_size)
        final = _jsonable_metrics(metrics or {})
        if self._last_loss is not None:
            final.setdefault("train_loss", self._last_loss)
        self.record.update(
            status="complete",
            finished=now_iso(),
            steps=self._last_step,
            timings={
                "train_s": round(self._train_s(), 4),
                "checkpoint_s": round(self._checkpoint_s, 4),
                **(timings or {}),
            },
            metrics=final,
            **saved.record(),
            num_parameters=_num_parameters(model),
            **(extra or {}),
        )
        self.dir.write_record(self.record)
        if self._repro is not None:
            self._repro.on_finish(model, self._last_step)
        publish_run(self.dir.path, self.path)
        self.dir = RunDir(self.path)
        self._close()
        return dict(self.record)

    def _close(self) -> None:
        """Release the lock; the next run in this process is not 'seeded' by this one's seeding."""
        global _seeding
        self._closed = True
        self._lock.release()
        _seeding = None

    def failure_note(self) -> str:
        """What a failure leaves behind, for the error's hint."""
        from modelkit.training.checkpoint import list_checkpoints

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
        if self._closed:
            return
        from modelkit.training.checkpoint import list_checkpoints

        if isinstance(error, ModelkitError):
            text = error.message
        elif isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
        else:
            text = str(error)
        try:
            with contextlib.suppress(OSError):
                self._flush()
            ckpts = list_checkpoints(self.dir.checkpoints)
            self.record.update(
                status="failed",
                error=text,
                finished=now_iso(),
                last_good_checkpoint=ckpts[-1].name if ckpts else None,
            )
            self.dir.write_record(self.record)
        finally:
            self._close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            if not self._closed:
                self.fail("the with-block ended without run.finish(model)")
                raise RunDirError(
                    f"the run {self.path} ended without run.finish(model)",
                    hint="call run.finish(model, metrics=...) at the end of training; "
                    + self.failure_note(),
                )
            return False
        if not self._closed:
            note = self.failure_note()
            self.fail(exc)
            if isinstance(exc, ModelkitError):
                exc.hint = f"{exc.hint}; {note}" if exc.hint else note
            else:
                exc.add_note(f"modelkit: {note}")
        return False

    def __del__(self) -> None:  # a run dropped without finish/fail still frees its lock
        lock = getattr(self, "_lock", None)
        if lock is not None and not getattr(self, "_closed", True):
            lock.release()


def _nudge(param: Any) -> None:
    """Move the first element of ``param`` by one ULP (the repro test hook)."""
    import torch

    with torch.no_grad():
        p = param.view(-1)
        p[0] = torch.nextafter(p[0], torch.tensor(math.inf, dtype=p.dtype, device=p.device))


def _checked_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        try:
            import numbers

            if isinstance(step, numbers.Integral) and int(step) >= 0:
                return int(step)
        except Exception:
            pass
        raise BadInputError(f"step must be an integer >= 0, got {step!r}", hint="pass the step")
    return step


def _jsonable_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in metrics.items():
        if key in ("kind", "sha256"):
            raise BadInputError(
                f"'{key}' is a reserved metrics.jsonl field", hint="log it under another name"
            )
        if hasattr(value, "item") and callable(value.item):  # a 0-d tensor or numpy scalar
            value = value.item()
        out[key] = value
    try:
        json.dumps(out)
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"metrics must be numbers or strings: {exc}", hint="log loss=loss.item()"
        ) from None
    return out


def _json_state(value: Any, *, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"the {what} cannot be stored as JSON (checkpoints never pickle): {exc}",
            hint="pass JSON-able state; tensors go in extra_tensors",
        ) from None


def _num_parameters(model: Any) -> int | None:
    if model is None:
        return None
    return int(sum(p.numel() for p in model.parameters()))


# ---- errors in a user's script --------------------------------------------------------------
def _install_error_hook() -> None:
    """An uncaught ModelkitError in a training script ends it as the CLI would: one ``error:``
    line, one ``hint:`` line, its exit code (1 failure, 2 bad input, 3 a check said no).
    Installed only over Python's default hook; ``MODELKIT_DEBUG=1`` keeps the traceback."""
    if sys.excepthook is not sys.__excepthook__:
        return

    def hook(exc_type: Any, exc: BaseException, tb: Any) -> None:
        if not isinstance(exc, ModelkitError):
            sys.__excepthook__(exc_type, exc, tb)
            return
        if os.environ.get("MODELKIT_DEBUG", "") not in ("", "0"):
            sys.__excepthook__(exc_type, exc, tb)
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        if exc.exit_code == 1:
            return  # Python exits with 1 after an uncaught exception: a normal shutdown
        exit_now(exc.exit_code)

    sys.excepthook = hook


# ---- modelkit repro's hooks (modelkit/repro/hooks.py) -----------------------------------------
def _repro_hooks(trainer: str) -> Any:
    """The ``MODELKIT_PERTURB`` / state-dump hooks for a user's loop (None: none asked for)."""
    if trainer != "user":  # modelkit train has its own (RunOptions)
        return None
    from modelkit.repro.hooks import RunHooks

    return RunHooks.from_env()
