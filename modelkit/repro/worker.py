"""One training run in a fresh process, for ``modelkit repro``: ``python -m modelkit.repro.worker SPEC``.

SPEC is a JSON file ``{"config": {...}, "out": RUN_DIR, "options": {...RunOptions}}``. The run
directory is written as by ``modelkit train``; a typed error is written to ``RUN_DIR.error.json``
and becomes the exit code. Nothing is printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from modelkit.errors import ModelkitError
from modelkit.repro.records import state_sha256
from modelkit.training.distributed import PeerFailure, RemoteError, env_world


def main(argv: list[str]) -> int:
    """Run the spec in ``argv[1]``; returns the exit code."""
    from modelkit.config import TrainConfig
    from modelkit.project import load_project
    from modelkit.training.loop import RunOptions, train

    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    out = Path(spec["out"])
    opts = dict(spec.get("options", {}))
    if opts.get("dump_dir"):
        opts["dump_dir"] = Path(opts["dump_dir"])
    opts["dump_steps"] = tuple(opts.get("dump_steps", ()))

    rank = env_world()[0]
    try:
        config = TrainConfig.from_dict(spec["config"], source=str(argv[1]))
        train(config, out=out, project=load_project(), options=RunOptions(**opts))
    except ModelkitError as exc:
        error = {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
        error["secondary"] = isinstance(exc, (PeerFailure, RemoteError))  # another rank's fault
        name = f"{out}.error.json" if rank == 0 else f"{out}.error.rank{rank}.json"
        Path(name).write_text(json.dumps({**error, "exit_code": exc.exit_code}))
        return exc.exit_code
    if rank != 0:  # under torchrun only rank 0 writes
        return 0
    if opts.get("dump_dir"):  # the final state's sha256, so the parent need not load torch
        from modelkit.training.checkpoint import list_checkpoints, load_checkpoint

        tensors, meta = load_checkpoint(list_checkpoints(opts["dump_dir"])[-1])
        result = {"state_sha256": state_sha256(tensors, meta), "final_step": meta["step"]}
        Path(f"{out}.result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    from modelkit.training.distributed import exit_process

    exit_process(main(sys.argv))  # a torchrun worker skips finalisation (see there)
