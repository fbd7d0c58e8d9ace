"""One training run in a fresh process, for ``modelkit repro``: ``python -m modelkit.repro.worker SPEC``.

SPEC is a JSON file ``{"config": {...}, "out": RUN_DIR, "options": {...}}`` (a
:class:`~modelkit.repro.payloads.WorkerSpec`). The run
directory is written as by ``modelkit train``; a typed error is written to ``RUN_DIR.error.json``
and becomes the exit code. Nothing is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelkit.errors import ModelkitError
from modelkit.repro.dumps import dump_result
from modelkit.repro.payloads import WorkerError, WorkerSpec, read_payload, write_payload
from modelkit.training.distributed import PeerFailure, RemoteError, env_world


def main(argv: list[str]) -> int:
    """Run the spec in ``argv[1]``; returns the exit code."""
    from modelkit.config import TrainConfig
    from modelkit.project import load_project
    from modelkit.training.loop import train

    spec = read_payload(WorkerSpec, Path(argv[1]))
    out = Path(spec.out)
    rank = env_world()[0]
    try:
        config = TrainConfig.from_dict(spec.config, source=str(argv[1]))
        train(config, out=out, project=load_project(), options=spec.options.run_options())
    except ModelkitError as exc:
        error = WorkerError(
            type=type(exc).__name__,
            message=exc.message,
            hint=exc.hint,
            secondary=isinstance(exc, (PeerFailure, RemoteError)),  # another rank's fault
            exit_code=exc.exit_code,
        )
        name = f"{out}.error.json" if rank == 0 else f"{out}.error.rank{rank}.json"
        write_payload(error, Path(name))
        return exc.exit_code
    if rank != 0:  # under torchrun only rank 0 writes
        return 0
    if spec.options.dump_dir:  # the final state's sha256, so the parent need not load torch
        from modelkit.training.checkpoint import list_checkpoints

        last = list_checkpoints(Path(spec.options.dump_dir))[-1]
        write_payload(dump_result(last), Path(f"{out}.result.json"))
    return 0


if __name__ == "__main__":
    from modelkit.training.distributed import exit_process

    exit_process(main(sys.argv))  # a torchrun worker skips finalisation (see there)
