"""One :class:`Checkpoint` type: what it holds, how it is saved, loaded and restored.

A checkpoint is everything needed to continue bitwise after ``step``: the model, the optimizer,
the LR scheduler, every RNG state (Python, NumPy, torch CPU and CUDA), the loop's own JSON
position (``state``), tensors and objects (``tensors`` / ``objects``, e.g. a grad scaler) and
the run writer's counters (``run``). It is one file ``ckpt-{step:08d}.safetensors`` without
pickle:

* tensors: ``model.<name>``, ``optim.<param>.<key>``, ``extra.rng.<gen>``, ``extra.user.<name>``;
* ``__meta__`` (JSON): ``step``, ``state``, ``optimizer`` (param groups + scalars),
  ``objects`` (``rng``, ``scheduler``, ``user``, ``run``), the payload's ``sha256`` and the
  metadata's own ``meta_sha256`` (a truncated or edited file is detected).

Writes are atomic (temp + fsync + rename) and only the newest ``keep`` are kept. Restoring
checks that the checkpoint fits the live model and optimizer before loading anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelkit.errors import BadInputError, RunDirError
from modelkit.io import atomic_path
from modelkit.runs.compat import check_model_fits, check_optimizer_fits

PREFIX, SUFFIX = "ckpt-", ".safetensors"


@dataclass
class Checkpoint:
    """Everything to continue bitwise after ``step`` (see the module docstring)."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None  # optimizer.state_dict()
    scheduler: dict[str, Any] | None = None  # scheduler.state_dict() (JSON)
    rng_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    rng: dict[str, Any] | None = None  # capture_rng()'s JSON half; None: not captured
    state: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # ---- capture and save ------------------------------------------------------------------
    @classmethod
    def capture(
        cls,
        *,
        step: int,
        model: torch.nn.Module,
        optimizer: Any = None,
        scheduler: Any = None,
        state: dict[str, Any] | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
        objects: dict[str, Any] | None = None,
        rng: bool = True,
        cuda_devices: list[int] | None = None,
    ) -> Checkpoint:
        """The live objects' state now (and every RNG state, unless ``rng=False``)."""
        from modelkit.runs.rng import capture_rng

        rng_tensors, rng_meta = capture_rng(cuda_devices) if rng else ({}, None)
        return cls(
            step=step,
            model=dict(model.state_dict()),
            optimizer=optimizer.state_dict() if optimizer is not None else None,
            scheduler=json_state(scheduler.state_dict(), what="scheduler state")
            if scheduler is not None
            else None,
            rng_tensors=rng_tensors,
            rng=rng_meta,
            state=json_state(state or {}, what="state"),
            tensors=dict(tensors or {}),
            objects=json_state(objects or {}, what="objects"),
        )

    def save(self, directory: Path, *, keep: int | None = 2) -> Path:
        """Write the file atomically into ``directory``, keep the newest ``keep``; its path."""
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        flat = {f"model.{k}": v for k, v in self.model.items()}
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer)
        flat.update(opt_tensors)
        flat.update({f"extra.{k}": v for k, v in self.rng_tensors.items()})
        flat.update({f"extra.user.{k}": v for k, v in self.tensors.items()})
        flat = {k: v.detach().cpu().contiguous().clone() for k, v in flat.items()}
        objects: dict[str, Any] = {"user": self.objects, "run": self.run}
        if self.rng is not None:
            objects["rng"] = self.rng
        if self.scheduler is not None:
            objects["scheduler"] = self.scheduler
        meta = {
            "step": self.step,
            "state": self.state,
            "optimizer": opt_meta,
            "objects": objects,
            "sha256": _payload_digest(flat),
        }
        meta["meta_sha256"] = _meta_digest(meta)
        path = directory / f"{PREFIX}{self.step:08d}{SUFFIX}"
        with atomic_path(path) as tmp:
            save_file(flat, str(tmp), metadata={"__meta__": json.dumps(meta, sort_keys=True)})
        if keep is not None:
            for old in list_checkpoints(directory)[: -max(1, keep)]:
                old.unlink(missing_ok=True)
        self.path = path
        return path

    # ---- load and restore ------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read and verify one file (corrupt or truncated: RunDirError)."""
        tensors, meta = load_checkpoint(path)
        groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "extra": {}}
        for name, t in tensors.items():
            kind, _, rest = name.partition(".")
            groups[kind][name if kind == "optim" else rest] = t
        extra = groups["extra"]
        objects = meta.get("objects", {})
        return cls(
            step=int(meta["step"]),
            model=groups["model"],
            optimizer=unflatten_optimizer(groups["optim"], meta["optimizer"]),
            scheduler=objects.get("scheduler"),
            rng_tensors={k: v for k, v in extra.items() if k.startswith("rng.")},
            rng=objects.get("rng"),
            state=meta.get("state", {}),
            tensors={k[5:]: v for k, v in extra.items() if k.startswith("user.")},
            objects=objects.get("user", {}),
            run=objects.get("run", {}),
            path=path,
        )

    @classmethod
    def latest(
        cls, directory: Path, *, fallback: bool = False
    ) -> tuple[Checkpoint | None, list[dict[str, str]]]:
        """The newest checkpoint that verifies, and the rejected ones (``fallback`` only).

        A corrupt newest checkpoint raises :class:`RunDirError` unless ``fallback``; None when
        there is no checkpoint yet (the run starts from step 0).
        """
        rejected: list[dict[str, str]] = []
        for path in reversed(list_checkpoints(directory)):
            try:
                return cls.load(path), rejected
            except RunDirError as exc:
                if not fallback:
                    raise
                rejected.append({"checkpoint": path.name, "reason": exc.message})
        if rejected:
            raise RunDirError(
                f"no checkpoint in {directory} verifies ({len(rejected)} corrupt)",
                hint="start the run again",
            )
        return None, rejected

    def restore(self, model: Any, optimizer: Any = None, scheduler: Any = None) -> None:
        """Load into the live objects and restore every RNG, after checking that they fit."""

        where = str(self.path or f"checkpoint step {self.step}")
        check_model_fits(self.model, model, where=where)
        if optimizer is not None:
            check_optimizer_fits(self.optimizer, optimizer, where=where)
        if scheduler is not None and self.scheduler is None:
            raise RunDirError(
                f"checkpoint {where} holds no scheduler state",
                hint="resume with the objects the run was checkpointed with",
            )
        model.load_state_dict(self.model, strict=True)
        if optimizer is not None and self.optimizer is not None:
            optimizer.load_state_dict(self.optimizer)
        self.restore_progress(scheduler)

    def restore_progress(self, scheduler: Any = None) -> None:
        """The scheduler's state and every RNG (what :meth:`restore` loads after the weights)."""
        from modelkit.runs.rng import restore_rng

        if scheduler is not None and self.scheduler is not None:
            scheduler.load_state_dict(self.scheduler)
        if self.rng is not None:
            restore_rng(self.rng_tensors, self.rng)


def json_state(value: Any, *, what: str) -> Any:
    """``value`` round-tripped through JSON (checkpoints never pickle), else BadInputError."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"the {what} cannot be stored as JSON (checkpoints never pickle): {exc}",
            hint="pass JSON-able state; tensors go in extra_tensors",
        ) from None


# ---- the file format ---------------------------------------------------------------------------
def flatten_optimizer(state: dict[str, Any] | None) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into ``optim.*`` tensors and the JSON-able rest."""
    state = state or {"state": {}, "param_groups": []}
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def _payload_digest(tensors: dict[str, torch.Tensor]) -> str:
    from modelkit.runs.fingerprint import hash_tensors

    return hash_tensors((name, tensors[name]) for name in sorted(tensors)).hexdigest()


def _meta_digest(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX)
    )


def checkpoint_file(directory: Path, step: int) -> Path:
    """The file of the checkpoint (or state dump) of ``step`` in ``directory``."""
    return directory / f"{PREFIX}{step:08d}{SUFFIX}"


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one file as flat ``(tensors, meta)`` (repro compares dumps this way)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["__meta__"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:
        raise RunDirError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__})",
            hint="resume from the previous one (fallback=True, --fallback-checkpoint)",
        ) from None
    if _payload_digest(tensors) != meta.get("sha256") or (
        "meta_sha256" in meta and _meta_digest(meta) != meta["meta_sha256"]
    ):
        raise RunDirError(
            f"checkpoint {path} fails its checksum",
            hint="resume from the previous one (fallback=True, --fallback-checkpoint)",
        )
    return tensors, meta
