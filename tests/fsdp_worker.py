"""A torchrun worker for tests/test_fsdp_meta_stream.py (2 gloo processes on CPU).

For each model of ``models_meta`` (the test writes it): the run's own setup builds it once
unsharded and once sharded (meta device where exact, else the whole model); rank 0 records
whether the sharded initial weights (gathered whole) and the random generator after the build
equal the unsharded build's, and how it was built. Then the final weights of the sharded model
are written twice, by the file-by-file gather and by the whole-state gather the trainer used
before (torch's ``get_model_state_dict(full_state_dict=True, cpu_offload=True)``, its tensors
compacted, + ``save_model_weights``), and rank 0 records whether every file is byte-identical.
Usage: torchrun --nproc-per-node 2 fsdp_worker.py OUT_DIR MODEL... (run in the project dir).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from modelkit.config import resolve_config
from modelkit.project import load_project
from modelkit.training import distributed as D
from modelkit.training import sharding
from modelkit.training.options import RunOptions
from modelkit.training.setup import setup
from modelkit.weights import plan_weights, save_model_weights, save_streamed_weights

SIZES = ("3KB", None)  # several files, one file


def build(model: str, shard: bool) -> tuple[object, torch.Tensor]:
    overrides = {"model": model, "data": "digits", "device": "cpu", "shard": shard, "seed": 3}
    cfg = resolve_config(overrides=overrides, project=load_project())
    s = setup(cfg, project=load_project(), download=False, options=RunOptions())
    return s, torch.get_rng_state()


def compare_init(model: str) -> dict:
    plain, rng_plain = build(model, False)
    reference = {k: v.detach().clone() for k, v in plain.model.state_dict().items()}
    sharded, rng_sharded = build(model, True)
    whole = dict(sharding.full_items(sharded.model))
    x = plain.data.x_train[:4]
    with torch.no_grad():  # the forward (FSDP2's own all-gathers) sees the same weights
        same_output = torch.equal(plain.model.eval()(x), sharded.model.eval()(x))
    sharding.reshard(sharded.model)  # as the trainer leaves it (the root keeps its gather)
    return {
        "init": sharded.accel.get("fsdp_init"),
        "same_names": list(whole) == list(reference),
        "bitwise": all(torch.equal(whole[k], reference[k]) for k in reference),
        "same_output": same_output,
        "same_rng": bool(torch.equal(rng_plain, rng_sharded)),
        "model": sharded.model,
    }


def write_both(model: torch.nn.Module, world: D.World, out: Path, size: str | None) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    old, new = out / f"old-{size}", out / f"new-{size}"
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=opts)
    saved_old, old_failed = None, False
    if world.main:
        try:
            saved_old = save_model_weights(state, old, max_shard_size=size)
        except RuntimeError as exc:  # on CPU, torch's gather returns a parameter whose rows
            # do not divide by the world size as a view into its padded buffer, which
            # huggingface_hub refuses: the old trainer failed there. Compacted, it writes.
            old_failed = "None is covering the entire storage" in str(exc)
            state = {k: v.clone() for k, v in state.items()}
            saved_old = save_model_weights(state, old, max_shard_size=size)
    del state
    if not world.main:
        sharding.drain_weights(model, world, size)
        return {}
    source = sharding.GatheredWeights(model, world)
    saved_new = save_streamed_weights(plan_weights(source.specs(), size), source.fetch, new)
    D.agree(world, None)
    files = sorted(p.name for p in old.iterdir())
    return {
        "old_failed": old_failed,
        "files": files,
        "same_files": files == sorted(p.name for p in new.iterdir()),
        "bytes_equal": all((old / f).read_bytes() == (new / f).read_bytes() for f in files),
        "same_record": saved_old == saved_new,
    }


def failing_write(model: torch.nn.Module, world: D.World, out: Path) -> dict:
    """The trainer's final write where rank 0 cannot write (its target is under a file): every
    rank must stop with rank 0's error, none waiting in a gather."""
    from types import SimpleNamespace

    from modelkit.training.loop import _write_sharded_weights

    blocker = out / "blocker"
    if world.main:
        blocker.write_text("")
    target = blocker / "run"

    class Writer:  # RunWriter.save_weights, into a target that cannot be created
        def save_weights(self, source: object, *, max_shard_size: str) -> object:
            plan = plan_weights(source.specs(), max_shard_size)
            return save_streamed_weights(plan, source.fetch, target)

    trainer = SimpleNamespace(
        world=world, model=model, config=SimpleNamespace(max_shard_size="3KB")
    )
    try:
        _write_sharded_weights(trainer, Writer())
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": None}


def main() -> None:
    out, models = Path(sys.argv[1]), sys.argv[2:]
    results = {}
    for name in models:
        result = compare_init(name)
        model = result.pop("model")
        world = D.join("cpu")
        folder = out / name.replace(":", "-")
        result["writes"] = {str(s): write_both(model, world, folder, s) for s in SIZES}
        results[name] = result
    world = D.join("cpu")
    results["failure"] = D.all_gather_json(failing_write(model, world, out), world)
    if world.main:
        (out / "results.json").write_text(json.dumps(results, indent=2))
    D.leave(world)
    D.exit_process(0)  # no interpreter finalisation under gloo (see exit_process)


if __name__ == "__main__":
    main()
