"""What ``modelkit repro -- CMD`` asks of a run written through :func:`modelkit.start_run`.

``repro`` runs the user's unmodified command in fresh processes and talks to the
:class:`~modelkit.tracking.Run` inside them through environment variables only:

=============================  ===========================================================
``MODELKIT_RUN_DIR``           where the run is written (read by ``start_run`` itself)
``MODELKIT_SEED``              replaces the seed (``seed_everything`` / ``start_run``)
``MODELKIT_DETERMINISTIC=1``   deterministic algorithms on, as if ``deterministic=True``
``MODELKIT_PERTURB=STEP:PARAM`` after the step logged as STEP, move element 0 of PARAM by
                               one ULP (a test hook: shows that localisation works)
``MODELKIT_FINGERPRINT_EVERY`` replaces ``fingerprint_every``
``MODELKIT_DUMP_DIR``          state dumps go here (checkpoint format), with ``result.json``
``MODELKIT_DUMP_STEPS``        steps to dump (and fingerprint): ``0,5-9``
``MODELKIT_REPRO_COMMAND``     the command ``repro`` ran (JSON argv + cwd), recorded in
                               ``run.json["command"]["repro"]`` so ``repro --against`` can
                               run it again
=============================  ===========================================================

``start_run`` itself reads the first four (:mod:`modelkit.tracking`); the rest are read here,
by runs of the user's own loop only (``trainer="user"``; ``modelkit train`` has its own
``RunOptions``). Importing this module does not import torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.errors import BadInputError
from modelkit.redact import redact
from modelkit.repro.dumps import dump_result
from modelkit.repro.payloads import write_payload
from modelkit.runs.parts import ReproCommand
from modelkit.runs.perturb import PERTURB_ENV
from modelkit.runs.seeding import DETERMINISTIC_ENV, SEED_ENV
from modelkit.runs.typed import read_typed, to_plain

FINGERPRINT_EVERY_ENV = "MODELKIT_FINGERPRINT_EVERY"
DUMP_DIR_ENV = "MODELKIT_DUMP_DIR"
DUMP_STEPS_ENV = "MODELKIT_DUMP_STEPS"
COMMAND_ENV = "MODELKIT_REPRO_COMMAND"
RESULT_FILE = "result.json"

# every variable repro sets in a child (removed from the parent's env before it sets its own)
REPRO_ENVS = (
    "MODELKIT_RUN_DIR",
    SEED_ENV,
    DETERMINISTIC_ENV,
    PERTURB_ENV,
    FINGERPRINT_EVERY_ENV,
    DUMP_DIR_ENV,
    DUMP_STEPS_ENV,
    COMMAND_ENV,
)


def format_steps(steps: list[int] | range) -> str:
    """``[0, 5, 6, 7]`` -> ``"0,5-7"`` (the ``MODELKIT_DUMP_STEPS`` syntax)."""
    out: list[str] = []
    ordered = sorted(set(steps))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def parse_steps(text: str) -> frozenset[int]:
    """``"0,5-7"`` -> ``{0, 5, 6, 7}``; anything else is a BadInputError."""
    steps: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise BadInputError(
                f"{DUMP_STEPS_ENV}={text!r}: '{part}' is not a step or a range A-B",
                hint=f"e.g. {DUMP_STEPS_ENV}=0,5-9",
            )
        steps.update(range(int(lo), int(hi if sep else lo) + 1))
    return frozenset(steps)


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise BadInputError(f"{name}={raw!r} is not an integer >= 0", hint=f"unset {name}")
    return int(raw)


@dataclass
class RunHooks:
    """The repro hooks one user run honours (see the module docstring)."""

    fingerprint_every: int | None = None
    dump_dir: Path | None = None
    dump_steps: frozenset[int] = frozenset()
    command: ReproCommand | None = None
    optimizer: Any = None  # the last optimizer passed to run.checkpoint (dumped with the model)
    _dumped: set[int] = field(default_factory=set)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RunHooks | None:
        """The hooks the environment asks for; None when it asks for none."""
        dump = environ.get(DUMP_DIR_ENV, "").strip()
        hooks = cls(
            fingerprint_every=_int_env(environ, FINGERPRINT_EVERY_ENV),
            dump_dir=Path(dump) if dump else None,
            dump_steps=parse_steps(environ.get(DUMP_STEPS_ENV, "")),
            command=_command_env(environ.get(COMMAND_ENV, "")),
        )
        if hooks.dump_dir is None and hooks.command is None:
            return None if hooks.fingerprint_every is None else hooks
        return hooks

    def repro_block(self) -> dict[str, Any] | None:
        """The command repro ran, redacted, for run.json's ``command.repro`` (``repro
        --against`` runs it again); None when the run was not started by ``repro -- CMD``."""
        return redact(to_plain(self.command)) if self.command is not None else None

    def on_log(self, run: Any, step: int, loss: Any) -> None:
        """After ``run.log(step)`` (and its MODELKIT_PERTURB nudge): fingerprint when due, dump."""
        model = run.model
        if model is None:
            return
        every = run.fingerprint_every
        if (every and step % every == 0) or step in self.dump_steps:
            run.fingerprint(step, loss=loss)
        if step in self.dump_steps:
            self.dump(model, step)

    def dump(self, model: Any, step: int) -> None:
        """The model (and the optimizer seen by ``run.checkpoint``) at ``step``."""
        if self.dump_dir is None:
            return
        from modelkit.runs.checkpoint import Checkpoint

        ckpt = Checkpoint.capture(step=step, model=model, optimizer=self.optimizer, rng=False)
        ckpt.save(self.dump_dir, keep=None)
        self._dumped.add(step)

    def on_finish(self, model: Any, step: int | None) -> None:
        """The final state's dump and sha256 (``result.json``), so the parent need not load it."""
        if self.dump_dir is None:
            return
        from modelkit.training.checkpoint import checkpoint_file

        final = step if step is not None else 0
        if final not in self._dumped:
            self.dump(model, final)
        write_payload(
            dump_result(checkpoint_file(self.dump_dir, final)), self.dump_dir / RESULT_FILE
        )


def _command_env(text: str) -> ReproCommand | None:
    """``MODELKIT_REPRO_COMMAND`` (written by repro: JSON argv + cwd); None when unset or not
    that shape."""
    if not text:
        return None
    try:
        return read_typed(ReproCommand, json.loads(text), source=COMMAND_ENV, error=BadInputError)
    except (json.JSONDecodeError, BadInputError):
        return None
