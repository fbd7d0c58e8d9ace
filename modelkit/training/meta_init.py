"""A sharded model built on the meta device: each rank allocates only its shards, and the
initial weights are bitwise those of the ordinary build for the same seed.

Under ``--shard`` every rank used to build the whole model in host memory and move it to its
device before ``fully_shard`` kept its part. Instead:

1. :func:`meta_build` runs the model's constructor on the ``meta`` device (no memory, no
   random numbers drawn) under a recorder of every tensor operation that writes a tensor or
   draws random numbers: the operation, its arguments, and which parameter or buffer it
   reads and writes, in order. It then calls every module's ``reset_parameters()`` on the
   meta model in a fixed order (``model.modules()``) under the same recorder. The meta build
   is used only when the two records are equal (the same operations with the same arguments
   on the same tensors in the same order: the same draws from the seeded generator, the same
   values), every parameter and buffer is written whole by those calls, each call writes only
   its own module's tensors, and the constructor drew nothing from Python's or NumPy's
   generator.
2. After ``fully_shard``, :func:`materialize` allocates each rank's shards (``to_empty``) and,
   module by module in that order, runs ``reset_parameters()`` on whole tensors on the CPU
   (the seeded generator, as the ordinary build) and copies this rank's part into its shards.
   The host holds one module's tensors at a time; every rank computes the same whole tensors,
   so the values do not depend on the world size.

Otherwise (an ``__init__`` that initialises in its own way, a module without
``reset_parameters``, a buffer computed in ``__init__``, tied weights, ...) the run builds the
whole model as before, and says why: run.json's ``sharding.init`` is ``"meta"`` or ``"full"``
with ``sharding.init_note``. No tensor is ever left as ``to_empty``'s uninitialised memory.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from modelkit.training import distributed as D


@dataclass(frozen=True)
class MetaPlan:
    """How to initialise a meta-built model: the modules whose ``reset_parameters()`` do it,
    in order (names in ``model.named_modules()``)."""

    order: tuple[str, ...]


def _key(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError):
        return id(t)


def _written(func: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors an operation writes (its schema's mutable arguments)."""
    out: list[torch.Tensor] = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = args[i] if i < len(args) and not arg.kwarg_only else kwargs.get(arg.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        out += [v for v in values if isinstance(v, torch.Tensor)]
    return out


class _Recorder(TorchDispatchMode):
    """Records ``(op, arguments, written tensors)`` of every operation that writes a tensor or
    draws random numbers; tensors as ``(storage, shape, stride, offset, dtype)``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[Any, ...]] = []
        self.owners: list[str] = []  # replay: the module whose reset_parameters ran it
        self.module = ""
        self.whole: set[int] = set()  # storages some operation wrote whole
        self._keep: list[Any] = []  # every tensor seen stays alive: storage keys stay unique

    def _t(self, t: torch.Tensor) -> tuple[Any, ...]:
        self._keep.append(t)
        return ("T", _key(t), tuple(t.shape), tuple(t.stride()), t.storage_offset(), str(t.dtype))

    def _arg(self, v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return self._t(v)
        if isinstance(v, (list, tuple)):
            return tuple(self._arg(x) for x in v)
        return repr(v)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        written = _written(func, args, kwargs)
        if written or torch.Tag.nondeterministic_seeded in func.tags:
            described = (self._arg(args), self._arg(sorted(kwargs.items())))
            self.events.append((str(func), described, tuple(self._t(w) for w in written)))
            self.owners.append(self.module)
            for w in written:
                if w.storage_offset() == 0 and w.nbytes == w.untyped_storage().nbytes():
                    self.whole.add(_key(w))
        for t in out if isinstance(out, (list, tuple)) else [out]:
            if isinstance(t, torch.Tensor):
                self._keep.append(t)
        return out


def _rng_states() -> tuple[Any, ...]:
    import numpy as np

    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _restore_rng(states: tuple[Any, ...]) -> None:
    import numpy as np

    torch.set_rng_state(states[0])
    random.setstate(states[1])
    np.random.set_state(states[2])


def _same_rng(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    import numpy as np

    same_np = a[2][0] == b[2][0] and np.array_equal(a[2][1], b[2][1]) and a[2][2:] == b[2][2:]
    return bool(torch.equal(a[0], b[0])) and a[1] == b[1] and bool(same_np)


def meta_build(
    build: Callable[[], Any], check: Callable[[Any], None] | None = None
) -> tuple[Any, MetaPlan | None, str | None]:
    """``(build()'s result, plan, None)`` with the model on the meta device when its
    initialisation can be replayed exactly (module doc), else ``(None, None, why not)``; the
    random generators are left as they were. ``build`` returns the model or ``(model, ...)``;
    ``check(model)`` may refuse the meta model (raise) before it is accepted."""
    states = _rng_states()
    built, why = None, None
    try:
        with torch.device("meta"), _Recorder() as made:
            built = build()
        if not _same_rng(states, _rng_states()):
            why = "the model's constructor draws from Python's or NumPy's random generator"
    except Exception as exc:
        why = f"the model cannot be built on the meta device ({type(exc).__name__}: {exc})"
    finally:
        _restore_rng(states)
    if why is not None:
        return None, None, why
    model = built[0] if isinstance(built, tuple) else built
    plan, why = _replay_plan(model, made)
    if why is None and check is not None:
        try:
            check(model)
        except Exception as exc:
            why = f"the model's check on the meta device failed ({str(exc).splitlines()[0]})"
    return (built, plan, None) if why is None else (None, None, why)


def _labels(model: torch.nn.Module) -> dict[int, str]:
    """storage -> the first (sorted) name of a parameter or buffer that uses it."""
    names: dict[int, list[str]] = {}
    tensors = [*model.named_parameters(remove_duplicate=False)]
    tensors += [*model.named_buffers(remove_duplicate=False)]
    for name, t in tensors:
        names.setdefault(_key(t), []).append(name)
    return {k: sorted(v)[0] for k, v in names.items()}


def _relabel(events: list[tuple[Any, ...]], labels: dict[int, str]) -> list[Any]:
    def walk(v: Any) -> Any:
        if isinstance(v, tuple) and len(v) == 6 and v[0] == "T":
            return ("T", labels.get(v[1], "tmp"), *v[2:])
        if isinstance(v, tuple):
            return tuple(walk(x) for x in v)
        return v

    return [walk(e) for e in events]


def _replay_plan(model: Any, made: _Recorder) -> tuple[MetaPlan | None, str | None]:
    """Replay every ``reset_parameters()`` on the meta model; the plan, or why it is not exact."""
    if not isinstance(model, torch.nn.Module):
        return None, "the factory did not return an nn.Module"
    labels = _labels(model)
    order, replay = [], _Recorder()
    with replay, torch.no_grad():
        for name, module in model.named_modules():
            owns = any(True for _ in module.parameters(recurse=False))
            owns = owns or any(True for _ in module.buffers(recurse=False))
            reset = getattr(module, "reset_parameters", None)
            if owns and not callable(reset):
                what = f"module '{name}'" if name else "the model's root module"
                return None, f"{what} ({type(module).__name__}) has no reset_parameters"
            if callable(reset):
                replay.module = name
                reset()
                order.append(name)
    why = _compare(model, made, replay, labels)
    return (None, why) if why else (MetaPlan(tuple(order)), None)


def _compare(model: Any, made: _Recorder, replay: _Recorder, labels: dict[int, str]) -> str | None:
    """Why the replay does not reproduce the constructor's initialisation (None: it does)."""
    for key, name in sorted(labels.items(), key=lambda kv: kv[1]):
        if key not in replay.whole:
            return f"'{name}' is not initialised by its module's reset_parameters"
    scalar = next((n for n, p in model.named_parameters() if p.dim() == 0), None)
    if scalar is not None:
        return f"parameter '{scalar}' is a scalar (FSDP2 shards dimension 0)"
    modules = dict(model.named_modules())
    for event, owner in zip(replay.events, replay.owners, strict=True):
        own = {_key(t) for t in modules[owner].parameters(recurse=False)}
        own |= {_key(t) for t in modules[owner].buffers(recurse=False)}
        for written in event[2]:
            if written[1] in labels and written[1] not in own:
                where = f"'{owner}'" if owner else "the model's root module"
                return (
                    f"reset_parameters of {where} also writes '{labels[written[1]]}' "
                    "of another module"
                )
    a, b = _relabel(made.events, labels), _relabel(replay.events, labels)
    if a != b:
        pairs = enumerate(zip(a, b, strict=False))
        at = next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))
        what = _describe(a[at]) if at < len(a) else "nothing more"
        return (
            "the model's __init__ initialises differently from its modules' "
            f"reset_parameters (operation {at + 1}: {what})"
        )
    return None


def _describe(event: tuple[Any, ...]) -> str:
    """``aten.normal_ on 'h.0.weight'`` (an event's operation and what it writes)."""
    op = str(event[0]).removesuffix(".default")
    names = [w[1] for w in event[2] if w[1] != "tmp"]
    return f"{op} on '{names[0]}'" if names else op


def materialize(model: torch.nn.Module, plan: MetaPlan, world: D.World, device: Any) -> None:
    """Allocate this rank's shards of a meta-built, sharded ``model`` on ``device`` and fill
    them: every module of ``plan`` in order, whole tensors on the CPU, this rank's part kept."""
    model.to_empty(device=device)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in plan.order:
            _init_module(modules[name], world)


def _init_module(module: torch.nn.Module, world: D.World) -> None:
    """``module.reset_parameters()`` on whole CPU stand-ins of its own tensors, then this
    rank's part of each copied into the module's (sharded) parameters and its buffers."""
    params = {k: p for k, p in module._parameters.items() if p is not None}
    buffers = {k: b for k, b in module._buffers.items() if b is not None}
    for k, p in params.items():
        whole = torch.empty(p.shape, dtype=p.dtype)
        module._parameters[k] = torch.nn.Parameter(whole, requires_grad=p.requires_grad)
    for k, b in buffers.items():
        module._buffers[k] = torch.empty(b.shape, dtype=b.dtype)
    try:
        module.reset_parameters()  # type: ignore[operator]
        full = {k: module._parameters[k].detach() for k in params}  # type: ignore[union-attr]
        full_buffers = {k: module._buffers[k] for k in buffers}
    finally:
        module._parameters.update(params)
        module._buffers.update(buffers)
    for k, p in params.items():
        _copy_part(p, full[k], world)
    for k, b in buffers.items():
        b.copy_(full_buffers[k])


def _copy_part(param: Any, whole: torch.Tensor, world: D.World) -> None:
    """Copy this rank's part of ``whole`` into ``param`` (FSDP2's ``Shard(0)``: the
    ``world.size`` chunks of dim 0, the last ranks' empty when there are fewer rows)."""
    from torch.distributed.tensor import DTensor, Shard

    if not isinstance(param, DTensor):
        param.copy_(whole)
        return
    if tuple(param.placements) != (Shard(0),):
        raise RuntimeError(f"unexpected placement {param.placements} of a sharded parameter")
    local = param.to_local()
    chunks = torch.chunk(whole, world.size, dim=0)
    part = chunks[world.rank] if world.rank < len(chunks) else whole[:0]
    if tuple(part.shape) != tuple(local.shape):
        raise RuntimeError(f"a shard of {tuple(part.shape)}, the parameter holds {local.shape}")
    local.copy_(part)
