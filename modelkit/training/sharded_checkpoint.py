"""Checkpoints of a sharded (FSDP2) run: torch.distributed.checkpoint, per-rank shards, no pickle.

One checkpoint after step S is two things in the run's ``checkpoints/`` folder:

- ``ckpt-0000000S.dcp/``: the model and optimizer tensors, written collectively by
  ``torch.distributed.checkpoint.save`` through DCP's own safetensors storage
  (``HuggingFaceStorageWriter(save_distributed=True)``): each rank writes the shards it holds
  as ``shard-0000{rank+1}-model-0000k-of-0000n.safetensors`` (files of at most
  :data:`FILE_BYTES`), whose headers carry each shard's offsets in the whole tensor
  (``DCP_SHARDING_INFO``, JSON);
- ``ckpt-0000000S.safetensors``: the ordinary checkpoint file of the run (the *head*, written by
  rank 0 through :meth:`modelkit.runs.session.RunSession.save_checkpoint`, atomic, checksummed):
  the loop
  position, scheduler, every rank's RNG state and loss accumulator, the optimizer's
  hyperparameters and non-tensor state as JSON, and the sha256 of every shard file. The head
  is written last: it is the commit point, so a shard folder without a head is ignored (and
  removed at the next checkpoint). The shard folder itself is written under a temp name and
  renamed into place once every rank finished.

Why not DCP's default storage: ``FileSystemWriter`` stores its metadata (``.metadata``) with
``pickle.dump`` and ``FileSystemReader.read_metadata`` reads it with ``pickle.load``, which can
run arbitrary code from a crafted file (its tensor data is read with
``torch.load(weights_only=True)``, which is safe). DCP's ``HuggingFaceStorageReader`` rebuilds
the same metadata from the safetensors headers, so loading reads JSON headers and raw tensor
bytes only: nothing on disk is unpickled. (DCP still exchanges its save/load *plans* between
the ranks of the live process group with ``gather_object``, i.e. pickle over the process
group's own sockets between our own processes; nothing from a file.)

Resuming: :func:`latest_sharded` picks the newest checkpoint whose head and shards verify
(every rank checks its own shard files' sha256, rank 0 also that none is missing or extra; a
damaged one is named, and skipped with ``fallback``); the world size was checked first
(:class:`modelkit.errors.WorldSizeMismatch`). :func:`load_sharded` then lets DCP read each
rank's shards back into its DTensors in place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from modelkit.errors import RunDirError
from modelkit.io import fsync_dir, sha256_file
from modelkit.runs.checkpoint import PREFIX, SUFFIX, Checkpoint
from modelkit.training import distributed as D

DIR_SUFFIX = ".dcp"
# DCP's safetensors writer serialises a whole file in memory before writing it: a rank's part
# is cut into files of at most this many bytes, so a checkpoint adds at most ~one file to the
# rank's memory (docs/distributed.md, peak memory per rank)
FILE_BYTES = 1 << 30
TMP_PREFIX = ".dcp-tmp-"
FORMAT = "dcp-safetensors/1"


def flat_state(model: Any, optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, meta)``: the model's and optimizer's DTensors under ``model.<fqn>`` and
    ``optim.<fqn>.<key>``; the optimizer's param groups and non-tensor state as JSON.

    The optimizer's state is keyed by parameter name (torch's ``get_optimizer_state_dict``,
    which first creates the state of an optimizer that has not stepped yet).
    """
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    tensors = {f"model.{k}": v for k, v in get_model_state_dict(model).items()}
    osd = get_optimizer_state_dict(model, optimizer)
    scalars: dict[str, dict[str, Any]] = {}
    for fqn, entry in osd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{fqn}.{key}"] = value
            else:
                scalars.setdefault(fqn, {})[key] = value
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars}


def apply_state(model: Any, optimizer: Any, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Load :func:`flat_state`'s ``(tensors, meta)`` into the live model and optimizer."""
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    state: dict[str, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            fqn, key = name[6:].rsplit(".", 1)
            state.setdefault(fqn, {})[key] = value
    for fqn, entry in meta["scalars"].items():
        state.setdefault(fqn, {}).update(entry)
    set_model_state_dict(model, model_state)
    osd = {"state": state, "param_groups": meta["param_groups"]}
    set_optimizer_state_dict(model, optimizer, osd)


def file_groups(
    tensors: dict[str, Any], world_size: int, limit: int = FILE_BYTES
) -> dict[str, int]:
    """Tensor name -> file number (from 1): names in sorted order packed into files of at most
    ``limit`` bytes of one rank's share (a tensor's bytes / world size); equal on every rank."""
    mapping: dict[str, int] = {}
    index, size = 1, 0
    for name in sorted(tensors):
        t = tensors[name]
        share = t.numel() * t.element_size() // world_size  # a DTensor's numel is the whole's
        if size and size + share > limit:
            index, size = index + 1, 0
        mapping[name] = index
        size += share
    return mapping


def shard_prefix(rank: int) -> str:
    """The file name prefix of rank ``rank``'s shard file (DCP's naming)."""
    return f"shard-{rank + 1:05d}-"


def _hash_own(folder: Path, rank: int, *, main: bool) -> dict[str, str]:
    """sha256 of this rank's shard file(s); rank 0 also hashes any file no rank prefix names."""
    out = {}
    for p in sorted(folder.iterdir()):
        owner = (
            int(p.name[6:11]) - 1 if p.name.startswith("shard-") and p.name[6:11].isdigit() else -1
        )
        if owner == rank or (main and owner < 0):
            out[p.name] = sha256_file(p)
    return out


def save_sharded(t: Any, ckpt: Checkpoint, *, keep: int) -> Path | None:
    """Write trainer ``t``'s checkpoint (``ckpt``: :func:`~modelkit.training.state.capture`)
    as shards + head; collective. Returns the head's path on rank 0."""
    import torch.distributed.checkpoint as dcp

    world, step = t.world, ckpt.step
    ckdir: Path = t.checkpoint_dir
    tmp = ckdir / f"{TMP_PREFIX}{step:08d}"
    error: BaseException | None = None
    if world.main:
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        except Exception as exc:
            error = exc
    D.agree(world, error)
    tensors, opt_meta = flat_state(t.model, t.optimizer)
    groups = file_groups(tensors, world.size)
    writer = dcp.HuggingFaceStorageWriter(
        str(tmp), fqn_to_index_mapping=groups, save_distributed=True
    )
    dcp.save(tensors, storage_writer=writer)
    digests = D.all_gather_json(_hash_own(tmp, world.rank, main=world.main), world)
    head: Path | None = None
    if world.main:
        try:
            head = _commit(t, ckpt, tmp, digests, opt_meta, keep=keep)
        except Exception as exc:
            error = exc
    D.agree(world, error)
    return head


def _commit(
    t: Any,
    ckpt: Checkpoint,
    tmp: Path,
    digests: list[dict[str, str]],
    opt_meta: dict[str, Any],
    *,
    keep: int,
) -> Path:
    """Rank 0: move the shard folder into place, then write the head (the commit), prune."""
    step = ckpt.step
    files = {name: sha for part in digests for name, sha in part.items()}
    on_disk = sorted(p.name for p in tmp.iterdir())
    if sorted(files) != on_disk:
        raise RunDirError(
            f"sharded checkpoint of step {step}: files {on_disk} but ranks reported {sorted(files)}",
            hint="every rank must see the same checkpoints folder (a shared filesystem)",
        )
    final = t.checkpoint_dir / f"{PREFIX}{step:08d}{DIR_SUFFIX}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(t.checkpoint_dir)
    info = {
        "format": FORMAT,
        "dir": final.name,
        "files": files,
        "world_size": t.world.size,
        "optimizer": opt_meta,
    }
    ckpt.model, ckpt.optimizer = {}, None  # the tensors are in the shard folder
    ckpt.objects["sharded"] = info
    head = t.writer.checkpoint(ckpt, keep=keep)
    prune(t.checkpoint_dir)
    return head


def prune(ckdir: Path) -> list[str]:
    """Remove shard folders whose head is gone (pruned or never written) and temp folders."""
    heads = {p.name[: -len(SUFFIX)] for p in ckdir.iterdir() if p.name.endswith(SUFFIX)}
    removed = []
    for p in sorted(ckdir.iterdir()):
        orphan = p.name.endswith(DIR_SUFFIX) and p.name[: -len(DIR_SUFFIX)] not in heads
        if p.is_dir() and (orphan or p.name.startswith(TMP_PREFIX)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def verify_shards(folder: Path, files: dict[str, str], *, rank: int, main: bool) -> None:
    """This rank's part of the check before a load: rank 0 the set of shard files, every rank
    the sha256 of its own shard. Raises :class:`RunDirError` naming the file."""
    hint = "the checkpoint's shards are damaged; start the run again, or restore the files"
    if not folder.is_dir():
        raise RunDirError(f"sharded checkpoint folder {folder} is missing", hint=hint)
    on_disk = {p.name for p in folder.iterdir()}
    if main:
        missing, extra = sorted(set(files) - on_disk), sorted(on_disk - set(files))
        if missing or extra:
            what = f"shard {missing[0]} is missing" if missing else f"unexpected file {extra[0]}"
            raise RunDirError(f"sharded checkpoint {folder.name}: {what}", hint=hint)
    for name, expected in sorted(_mine(files, rank, main=main).items()):
        if name in on_disk and sha256_file(folder / name) != expected:
            raise RunDirError(
                f"sharded checkpoint {folder.name}: shard {name} fails its checksum", hint=hint
            )


def _mine(files: dict[str, str], rank: int, *, main: bool) -> dict[str, str]:
    prefix = shard_prefix(rank)
    return {
        n: s
        for n, s in files.items()
        if n.startswith(prefix) or (main and not n.startswith("shard-"))
    }


def latest_sharded(
    world: D.World, directory: Path, *, fallback: bool = False
) -> tuple[Checkpoint | None, list[dict[str, str]]]:
    """:meth:`Checkpoint.latest` for a sharded run: a checkpoint counts only when its head
    and every shard verify (each rank checks its own shard). Collective; every rank returns
    (or raises) the same. A damaged one raises :class:`RunDirError` naming the file, unless
    ``fallback``: then the previous one is tried and the damaged ones are listed."""
    from modelkit.training.checkpoint import list_checkpoints

    rejected: list[dict[str, str]] = []
    for path in reversed(list_checkpoints(directory)):
        ckpt, reason = None, None
        try:
            ckpt = Checkpoint.load(path)
            info = ckpt.objects.get("sharded") or {}
            folder = path.parent / str(info.get("dir"))
            verify_shards(folder, info.get("files") or {}, rank=world.rank, main=world.main)
        except RunDirError as exc:
            reason = exc.message
        reasons = [r for r in D.all_gather_json(reason, world) if r]
        if not reasons:
            return ckpt, rejected
        if not fallback:
            raise RunDirError(
                reasons[0], hint="resume from the previous one with --fallback-checkpoint"
            )
        rejected.append({"checkpoint": path.name, "reason": reasons[0]})
    if rejected:
        raise RunDirError(
            f"no checkpoint in {directory} verifies ({len(rejected)} damaged)",
            hint="start the run again",
        )
    return None, rejected


def load_sharded(t: Any, head: Path, info: dict[str, Any]) -> None:
    """Restore trainer ``t``'s model and optimizer from the shard folder a head names (its
    shards verified by :func:`latest_sharded`); collective."""
    import torch.distributed.checkpoint as dcp

    folder = head.parent / info["dir"]
    tensors, _ = flat_state(t.model, t.optimizer)  # the live DTensors: DCP reads into them
    dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(folder)))
    apply_state(t.model, t.optimizer, tensors, info["optimizer"])
