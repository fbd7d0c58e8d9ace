"""Seeding a run: the public ``seed_everything`` and the seed a run records.

``MODELKIT_SEED`` (:data:`SEED_ENV`), when set, replaces the seed a script passes (the control
run of ``repro``); ``MODELKIT_DETERMINISTIC=1`` (:data:`DETERMINISTIC_ENV`) turns on
deterministic algorithms whatever the script says. The torch side lives in
:mod:`modelkit.runs.rng`; importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from modelkit.errors import BadInputError
from modelkit.runs.exits import install_error_hook

SEED_ENV = "MODELKIT_SEED"
DETERMINISTIC_ENV = "MODELKIT_DETERMINISTIC"  # "1": deterministic algorithms

_seeding: dict[str, Any] | None = None  # the block of the last seed_everything() call


def seed_everything(
    seed: int, *, deterministic: bool = False, threads: int | None = None
) -> dict[str, Any]:
    """Seed Python, NumPy and torch (CPU and CUDA); optionally deterministic algorithms.

    Returns the block a run records as ``run.json["determinism"]`` (and remembers it, so a
    later :func:`modelkit.start_run` records it). ``MODELKIT_SEED``, when set, replaces
    ``seed``. ``threads`` fixes torch's intra-op thread count (CPU results depend on it).
    """
    global _seeding
    from modelkit.runs.rng import configure_determinism

    install_error_hook()  # the first modelkit call of a training script: errors end it as a verb
    seed = checked_seed(env_seed(seed))
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 0
    ):
        raise BadInputError(
            f"threads must be an integer >= 0, got {threads!r}", hint="pass threads=1 (or none)"
        )
    deterministic = bool(deterministic) or env_deterministic()
    block = configure_determinism(seed=seed, threads=threads or 0, deterministic=deterministic)
    block.pop("data_order", None)  # modelkit train's data order; a script has its own
    if os.environ.get(SEED_ENV):
        block["seed_from_env"] = SEED_ENV
    _seeding = block
    return dict(block)


@contextlib.contextmanager
def seeded_by(block: dict[str, Any]) -> Iterator[None]:
    """Inside: runs record ``block`` as their determinism (a framework seeded itself, as if
    through :func:`seed_everything`); nothing is re-seeded unless a run asks for a seed."""
    global _seeding
    before, _seeding = _seeding, dict(block)
    try:
        yield
    finally:
        _seeding = before


def forget_seeding() -> None:
    """The next run in this process is not 'seeded' by an earlier ``seed_everything``."""
    global _seeding
    _seeding = None


def env_deterministic() -> bool:
    """Whether ``MODELKIT_DETERMINISTIC`` asks for deterministic algorithms."""
    return os.environ.get(DETERMINISTIC_ENV, "") not in ("", "0")


def env_seed(seed: int | None) -> int | None:
    """``MODELKIT_SEED`` when set, else ``seed``."""
    raw = os.environ.get(SEED_ENV)
    if not raw:
        return seed
    try:
        return int(raw)
    except ValueError:
        raise BadInputError(
            f"{SEED_ENV}={raw!r} is not an integer", hint=f"set {SEED_ENV} to a seed, or unset it"
        ) from None


def checked_seed(seed: Any) -> int:
    """``seed`` when it is an integer in [0, 2**63), else BadInputError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise BadInputError(
            f"seed must be an integer in [0, 2**63), got {seed!r}", hint="pass seed=0 (or any)"
        )
    return seed


def run_determinism(seed: int | None, deterministic: bool | None) -> dict[str, Any]:
    """The determinism block of a run starting now: seed now, unless ``seed_everything``
    already did with this seed and mode; else what is true now (the script seeded, or not)."""
    if env_deterministic():
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
    from modelkit.runs.rng import configure_determinism, determinism_state

    note = {"seeded": "by the training script (not through modelkit)"}
    if deterministic:
        return configure_determinism(seed=None, threads=0, deterministic=True) | note
    import torch

    enabled = torch.are_deterministic_algorithms_enabled()
    return {**determinism_state(enabled=enabled, seed=None), **note}
